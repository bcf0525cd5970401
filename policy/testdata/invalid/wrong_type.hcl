policy "edge" {
  match {
    agents = "gw-*"
  }
  tpm = "required"

  heartbeat {
    missed = "3"
    grace  = 300
  }

  ebpf {
    allow_unlisted = "true"
  }

  on_failure {
    isolate = 1
  }
}
