# Rolling out a new agent build in stages without a wave of false alarms.
#
# Canary gateways get pulse-agent 1.5.1 first, in a one-night window. The
# rest of the gateways keep running 1.5.0 and may also take 1.5.1 during the
# following week. When the rollout is done, move 1.5.1 into allow and drop
# 1.5.0 and the windows in a reviewed pull request.

policy "gateway-canaries" {
  match {
    partitions = ["edge-eu-*", "edge-us-*"]
    agents     = ["gw-canary-[0-9][0-9]"]
  }

  tpm        = "required"
  clock_skew = "1m"

  agent_binary {
    # Unapproved agent binaries are severity 1 (critical).
    severity = 1
    allow = [
      "262bf28c4568feebaaa60bcf3fe3e15e098f924d5d25ee7714b0e17c4262cbd2", # 1.5.0
    ]
    update_window "canary-1.5.1" {
      start = "2025-04-01T22:00:00Z"
      end   = "2025-04-02T04:00:00Z"
      allow = ["70043759775c52f0036e29d73b4f34ebc024a042ce5b3bb68f2d6c56dca90c22"] # 1.5.1
    }
  }

  measured_boot {
    secure_boot {}
  }
}

policy "gateways" {
  match {
    partitions = ["edge-eu-*", "edge-us-*"]
    agents     = ["gw-*"]
  }

  tpm        = "required"
  clock_skew = "1m"

  agent_binary {
    severity = 1
    allow = [
      "262bf28c4568feebaaa60bcf3fe3e15e098f924d5d25ee7714b0e17c4262cbd2", # 1.5.0
    ]
    # Times may carry any offset; this window is a week of evenings in Paris.
    update_window "fleet-1.5.1" {
      start = "2025-04-07T20:00:00+02:00"
      end   = "2025-04-14T23:00:00+02:00"
      allow = ["70043759775c52f0036e29d73b4f34ebc024a042ce5b3bb68f2d6c56dca90c22"] # 1.5.1
    }
  }

  measured_boot {
    secure_boot {}
  }
}
