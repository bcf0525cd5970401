policy "edge" {
  match {
    partitions = ["edge-eu"]
  }
  tpm = "required"
  fortress {}
}

policy "edge" {
  match {
    partitions = ["edge-us"]
  }
  tpm = "required"
  fortress {}
}
