# The policy of the sample regression suite in policy/testdata/suite/evidence.
# Each NAME.json there is the recorded evidence of one device (built from the
# real firmware logs in testdata/eventlogs with `pulsectl policy evidence`),
# and NAME.expect the verdict this policy must give it. Run:
#
#   pulsectl policy test policy/testdata/suite/policy.hcl --evidence policy/testdata/suite/evidence

policy "cloud-vms" {
  match {
    partitions = ["cloud"]
  }

  tpm = "required"

  measured_boot {
    secure_boot {}

    # Both images boot through shim, which measures its MOK lists into PCR 14.
    runtime_pcr_history = ["MokList", "MokListX"]

    # The GRUB of the Ubuntu 21.04 image, revoked for this suite's sake.
    forbid "revoked-grub" {
      digests = ["b0a836fec2faf4a9bea0e1a5f1945bc86ddc03ac98ce0ae172ed9b1e536d7595"]
      reason  = "GRUB build revoked in SEC-2291"
    }
  }

  agent_binary {
    allow = ["262bf28c4568feebaaa60bcf3fe3e15e098f924d5d25ee7714b0e17c4262cbd2"]
  }

  ebpf {
    require "sentinel_signal" {}
    allow "shield_*" {}
  }

  # The kernels of this suite refuse BPF-LSM, so Fortress is only reported.
  fortress {
    mode = "warn"
  }
}

policy "legacy-scanners" {
  match {
    partitions = ["legacy"]
  }

  tpm = "required"

  measured_boot {
    bank = "sha1"
    secure_boot {}
    runtime_pcr_history = []
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

policy "workstations" {
  match {
    partitions = ["workstations"]
  }

  tpm = "required"

  # Workstations are allowed to run without Secure Boot for now: reported only.
  measured_boot {
    secure_boot {
      mode     = "warn"
      severity = 3
    }
  }
}
