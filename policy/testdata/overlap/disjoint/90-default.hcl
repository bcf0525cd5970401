policy "default" {
  match {
    agents = ["*"]
  }
  tpm = "optional"
  measured_boot {
    secure_boot {}
  }
}
