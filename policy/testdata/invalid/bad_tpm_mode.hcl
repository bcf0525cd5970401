policy "edge" {
  match {
    agents = ["*"]
  }
  tpm = "requried"
}

policy "lab" {
  match {
    partitions = ["lab"]
  }
  tpm = optional
}
