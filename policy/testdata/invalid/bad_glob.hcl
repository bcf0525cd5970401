policy "edge" {
  match {
    partitions = ["edge-[eu"]
    agents     = ["gw-[z-a]", ""]
  }
  tpm = "required"

  ebpf {
    allow "shield_[" {}
    require "sentinel_*" {}
  }
}
