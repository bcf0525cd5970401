policy "eu" {
  match {
    partitions = ["*-eu"]
    agents     = ["[a-c]*", "gw-1?"]
  }
  tpm = "optional"
  measured_boot {
    secure_boot {}
  }
}
