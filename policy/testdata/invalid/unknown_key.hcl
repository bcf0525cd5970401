# A misspelled setting is an error, with the closest known name as a hint.
policy "edge" {
  match {
    partitions = ["edge-*"]
  }
  tpm       = "required"
  clock_skw = "30s"

  heartbeat {
    intervall = "30s"
  }

  measured_boot {
    secureboot {}
  }
}
