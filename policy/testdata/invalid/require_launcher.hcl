policy "kiosk" {
  match {
    agents = ["kiosk-*"]
  }
  tpm = "required"

  agent_binary {
    require_launcher = "yes"
    allow = ["1111111111111111111111111111111111111111111111111111111111111111"]
  }
}
