# A production fleet: payment terminals held to the strictest rules, a lab
# where new builds are tried in warn mode (Secure Boot excepted), and a
# catch-all for everything else. The verifier selects the FIRST policy whose
# match covers an agent, so the most specific policies come first and the
# catch-all comes last.
#
# Check it with:  pulsectl policy check policy/examples/production.hcl

policy "payment-terminals" {
  # Agents in any partition whose name starts with "retail-" AND whose ID
  # starts with "pos-". Both lists are glob patterns: * any text, ? one
  # character, [0-9] a range.
  match {
    partitions = ["retail-*"]
    agents     = ["pos-*"]
  }

  # Every pulse must carry a TPM quote. An mTLS-only pulse is denied.
  tpm = "required"

  # How far the agent's clock may drift from the verifier's before its pulses
  # are reported as CLOCK_DESYNC (a bad clock, not a compromise).
  clock_skew = "30s"

  # Agents pulse every 15 seconds; after 4 missing pulses (1 minute) the agent
  # is BLINDED. After a verifier restart agents get 5 minutes of grace.
  heartbeat {
    interval = "15s"
    missed   = 4
    grace    = "5m"
  }

  # What a failed rule does unless the rule says otherwise: severity 1
  # (critical; 1 is the most severe, 4 the least) and isolate the terminal
  # from the rest of the fleet.
  on_failure {
    severity = 1
    isolate  = true
  }

  # Measured boot: checked against the firmware event log after it replayed
  # to the PCR values in the TPM quote. Only replayed events count.
  measured_boot {
    # The PCR bank the digests below are written in.
    bank = "sha256"

    # Secure Boot must be on (the SecureBoot variable measured into PCR 7).
    secure_boot {}

    # The terminals boot through shim, which measures its MOK lists into
    # PCR 14 (the runtime PCR) before the OS starts. Exactly these, in this
    # order: anything else in PCR 14's pre-OS history could be the agent's
    # runtime records passed off as MOK measurements by root. A device class
    # booted without shim says runtime_pcr_history = [].
    runtime_pcr_history = ["MokList", "MokListX"]

    # The only UEFI applications the firmware may load: our shim and GRUB
    # builds. Any other boot application or driver fails this rule. Two
    # versions may be listed at once while a rollout is under way.
    allow "boot-chain" {
      types = ["EV_EFI_BOOT_SERVICES_APPLICATION", "EV_EFI_BOOT_SERVICES_DRIVER"]
      digests = [
        "40d6cae02973789080cf4c3a9ad11b5a0a4d8bba4438ab96e276cc784454dee7", # shimx64.efi (RHEL 8)
        "e8a268c431da72caaae407f729f602b9dbf5d1d43492d4a51cc2b688a08586e3", # grubx64.efi (RHEL 8)
        "e4c0382f98feaebfd43923a85fd6da9a20e1a48524a4d5928c31850ca1a96a6e", # vmlinuz-4.18.0-240.22.1.el8_3, loaded by GRUB as an EFI image
      ]
    }

    # A component we know is vulnerable is refused wherever it shows up,
    # whatever PCR 0-7 event measured it. The reason is quoted in the alert.
    forbid "revoked-grub" {
      digests = ["b0a836fec2faf4a9bea0e1a5f1945bc86ddc03ac98ce0ae172ed9b1e536d7595"]
      reason  = "GRUB build revoked in SEC-2291"
    }

    # PCR 7 holds the Secure Boot policy (PK, KEK, db, dbx). Pinning it
    # catches a changed key database; list the new value here before a dbx
    # update reaches the fleet. Secure Boot rules are always enforced (the
    # default mode): a warn-mode Secure Boot or PCR 7 rule is one an attacker
    # who turned Secure Boot off can ignore.
    pcr "7" {
      values = ["5fd54361d580eb7592adb8deb236ff35444ceeac7148f24b3de63c041f12b3da"]
    }
  }

  # The agent binary, measured by the launcher before it ran.
  agent_binary {
    allow = [
      "019c0499c6992eb09393d9da6d13c7b4df7fad496120d64038891b296243c205", # pulse-agent 1.4.2
    ]

    # pulse-agent 1.5.0 rolls out in this change window: it is accepted from
    # the start of the window on, and a terminal may switch to it only inside
    # the window (a switch outside it is an unapproved change).
    update_window "agent-1.5.0" {
      start = "2025-03-04T02:00:00Z"
      end   = "2025-03-04T06:00:00Z"
      allow = ["262bf28c4568feebaaa60bcf3fe3e15e098f924d5d25ee7714b0e17c4262cbd2"]
    }
  }

  # eBPF programs pinned by the agent. Each required program must be loaded
  # with one of the listed builds; a pinned program no block lists fails the
  # ebpf rule (set allow_unlisted = true to accept them).
  ebpf {
    require "shield_xdp" {
      digests = ["d786201b37aeb1690416b63fe625c390ea1a5045b7f4a285b5b9a0477ca6cedf"]
    }
    require "sentinel_signal" {
      digests = ["875c0ff317371a14dbb00f9c9f5693ee65961e5a35a84fe37f0415a5382c93da"]
    }
    require "sentinel_bpf" {
      digests = ["319e3f62600311c018de495c79ca61041621003515ce11c29cd0a5418b640e0f"]
    }

    # The other Shield attach points are optional; any build is accepted.
    allow "shield_*" {}
  }

  # Fortress (the BPF-LSM guard) must be active. Kernels booted with
  # lockdown=integrity refuse BPF-LSM, so this only warns for now.
  fortress {
    mode     = "warn"
    severity = 2
    isolate  = false
  }
}

policy "lab" {
  match {
    partitions = ["lab", "lab-*"]
  }

  # Lab machines may lack a TPM: an mTLS-only pulse is accepted and shown as
  # DEGRADED (weaker trust) on the dashboard.
  tpm = "optional"

  # Boot findings are reported, not denied: mode set on a section applies to
  # every rule inside it, unless a rule sets its own. Secure Boot is the
  # exception and is enforced even here: a lab device that booted with it
  # off is denied (a device without a TPM has no boot evidence, and the rule
  # is skipped).
  measured_boot {
    mode = "warn"
    secure_boot {
      mode = "enforce"
    }
  }

  ebpf {
    mode           = "warn"
    allow_unlisted = true
    require "sentinel_signal" {}
  }

  on_failure {
    severity = 3
  }
}

policy "everything-else" {
  # The catch-all. Any policy written after it would never be selected, and
  # pulsectl policy check reports that as an error.
  match {
    agents = ["*"]
  }

  tpm = "required"

  measured_boot {
    secure_boot {}
  }
}
