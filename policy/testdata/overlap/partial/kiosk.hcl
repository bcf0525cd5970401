policy "kiosk" {
  match {
    agents = ["kiosk-*"]
  }
  tpm = "required"
  measured_boot {
    secure_boot {}
  }
}
