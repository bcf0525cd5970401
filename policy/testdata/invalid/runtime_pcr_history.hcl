policy "shim-hosts" {
  match {
    agents = ["*"]
  }
  tpm = "required"

  measured_boot {
    runtime_pcr_history = ["MokList", "MokLst", "EV_IPL", "MokListX", "MokList\u0000", "MokList"]
  }
}

policy "no-shim" {
  match {
    agents = ["kiosk-*"]
  }
  tpm = "required"

  measured_boot {
    runtime_pcr_history = "MokList"
  }
}

policy "shim-too" {
  match {
    agents = ["gw-*"]
  }
  tpm = "required"

  measured_boot {
    runtime_pcr_history = [
      "MokListX",
      14,
      "MokListX",
    ]
  }
}
