policy "everyone" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  measured_boot {
    secure_boot {}
  }
}

# Never selected: "everyone" above matches every agent first.
policy "gateways" {
  match {
    agents = ["gw-*"]
  }
  tpm = "required"
  fortress {}
}

policy "retail" {
  match {
    partitions = ["retail-*"]
  }
  tpm = "none"
  fortress {}
}
