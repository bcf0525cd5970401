policy "edge" {
  match {
    agents = ["*"]
  }
  tpm = "required"

  agent_binary {
    allow = ["019c0499c6992eb09393d9da6d13c7b4df7fad496120d64038891b296243c205"]
    update_window "1.5.0" {
      start = "2025-03-04T06:00:00Z"
      end   = "2025-03-04T02:00:00Z"
      allow = ["262bf28c4568feebaaa60bcf3fe3e15e098f924d5d25ee7714b0e17c4262cbd2"]
    }
    update_window "1.5.1" {
      start = "2025-04-01"
      end   = "2025-04-02T04:00:00Z"
      allow = ["70043759775c52f0036e29d73b4f34ebc024a042ce5b3bb68f2d6c56dca90c22"]
    }
  }
}
