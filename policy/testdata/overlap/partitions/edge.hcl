policy "edge" {
  match {
    partitions = ["edge-*"]
    agents     = ["gw-*"]
  }
  tpm = "required"
  measured_boot {
    secure_boot {}
  }
}
