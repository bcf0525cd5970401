policy "kiosk" {
  match {
    agents = ["kiosk-*"]
  }
  tpm = "required"

  planned_stop {
    stopped_by  = ["systemd", "/usr/lib/systemd/systemd-logind"]
    max_offline = "10s"
  }
}
