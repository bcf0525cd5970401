# The smallest useful policy: every agent must attest with a TPM and boot
# with Secure Boot on. Everything not written here takes its default
# (docs/policy.md lists them): clock skew 30s, a pulse every 30s, BLINDED
# after 3 missed pulses, failures at severity 2, no isolation.

policy "default" {
  match {
    agents = ["*"]
  }

  tpm = "required"

  measured_boot {
    secure_boot {}
  }
}
