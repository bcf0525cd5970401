policy "edge" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  measured_boot {
    secure_boot {}
  
}
