# "gw-*" in edge partitions already covers the canaries, so the canary policy
# below can never be selected. Swap the two blocks to fix it.
policy "gateways" {
  match {
    partitions = ["edge-*"]
    agents     = ["gw-*"]
  }
  tpm = "required"
  fortress {}
}

policy "canaries" {
  match {
    partitions = ["edge-eu-*"]
    agents     = ["gw-canary-[0-9]", "gw-07"]
  }
  tpm = "required"
  fortress {}
}
