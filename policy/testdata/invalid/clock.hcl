policy "edge" {
  match {
    agents = ["edge-*"]
  }
  tpm = "required"

  clock {
    require_synchronized = "yes"
    max_error            = "1m"
  }
}

policy "lab" {
  match {
    agents = ["lab-*"]
  }
  tpm = "required"

  clock {
    mode = "warn"
  }
}
