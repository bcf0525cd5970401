policy "edge" {
  match = {
    agents = ["*"]
  }
  tpm "required" {}

  heartbeat "fast" {
    interval = "10s"
  }
  measured_boot {
    pcr {
      values = []
    }
    allow {
      digests = []
    }
  }
}

policy {
  tpm = "none"
}
