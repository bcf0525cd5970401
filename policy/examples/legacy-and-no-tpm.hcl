# Older hardware. Some appliances have a TPM whose firmware log only carries
# SHA-1 digests; some have no TPM at all. Both are allowed explicitly here,
# and nowhere else: a host that enrolled with a TPM and then sends mTLS-only
# pulses is a downgrade attack, which tpm = "required" denies.

policy "legacy-sha1" {
  match {
    partitions = ["warehouse"]
    agents     = ["scanner-*"]
  }

  tpm = "required"

  measured_boot {
    # These TPMs have only a SHA-1 PCR bank, so the digests below are
    # SHA-1 (40 hex characters).
    bank = "sha1"

    secure_boot {}

    # The scanners' boot measures nothing into PCR 14, the runtime PCR,
    # before the OS starts: a pre-OS event there would be a runtime record
    # passed off as one of shim's MOK measurements.
    runtime_pcr_history = []

    # The three UEFI images the scanners' Debian 10 boot loads, starting
    # with EFI\BOOT\BOOTX64.EFI. Checked in PCR 4 only.
    allow "debian-boot" {
      types = ["EV_EFI_BOOT_SERVICES_APPLICATION"]
      pcrs  = [4]
      digests = [
        "47263679db883d7ad9adbc93d6a1fbf8095f0133",
        "3fae23b18d72350207661af3875f2c492e97621c",
        "89b08941b47dcfbd4c8b3f2bc0fad984cd836b21",
      ]
    }
  }
}

policy "no-tpm-kiosks" {
  match {
    partitions = ["warehouse"]
    agents     = ["kiosk-*"]
  }

  # No TPM: pulses are mTLS-only and shown as DEGRADED. Measured-boot rules
  # would be skipped for them, so this policy checks the agent's runtime
  # evidence (signed by its mTLS key) instead.
  tpm = "none"

  # Silence is noticed sooner on these exposed machines.
  heartbeat {
    interval = "10s"
    missed   = 3
  }

  agent_binary {
    allow = ["262bf28c4568feebaaa60bcf3fe3e15e098f924d5d25ee7714b0e17c4262cbd2"]
  }

  ebpf {
    require "sentinel_signal" {}
    require "shield_xdp" {}
    allow_unlisted = true
  }

  on_failure {
    severity = 2
    isolate  = true
  }
}
