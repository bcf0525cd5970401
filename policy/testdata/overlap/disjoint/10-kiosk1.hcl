policy "kiosk-1" {
  match {
    agents = ["kiosk-1"]
  }
  tpm = "required"
  measured_boot {
    secure_boot {}
  }
}
