policy "lab" {
  match {
    agents = ["*-lab"]
  }
  tpm = "optional"
  measured_boot {
    secure_boot {}
  }
}
