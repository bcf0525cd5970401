policy "lab" {
  match {
    partitions = ["lab"]
  }
  tpm = "optional"
  heartbeat {
    interval = "2s"
    missed   = 3
    grace    = "20s"
  }
}

policy "fleet" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  heartbeat {
    interval = "2s"
    missed   = 3
    grace    = "20s"
  }
  measured_boot {
    secure_boot {}
  }
}
