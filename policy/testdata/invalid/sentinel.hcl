policy "edge" {
  match {
    agents = ["*"]
  }
  tpm = "required"

  sentinel {
    signals     = ["SIGKILL", "SIGNOPE"]
    bpf_loaders = ["/usr/sbin/bpftool-is-too-long"]
  }
}
