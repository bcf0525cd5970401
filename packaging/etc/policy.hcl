# /etc/pulse/policy.hcl: the fleet policy (docs/policy.md). This example
# is the smallest useful one: every agent attests with a TPM and booted
# with Secure Boot on. Derive a real one from a known-good device's
# evidence: pulsectl policy derive (docs/policy.md). Check an edit with
#   pulsectl policy check policy.hcl
# The verifier re-reads it when it changes; an edit that does not validate
# keeps the policy in force and raises policy_reload_failed.

policy "default" {
  match {
    agents = ["*"]
  }

  tpm = "required"

  measured_boot {
    secure_boot {}
  }
}
