policy "edge" {
  match {
    agents = ["*"]
  }
  match {
    agents = ["gw-*"]
  }
  tpm = "required"

  ebpf {
    require "shield_xdp" {}
    require "shield_xdp" {}
  }
  measured_boot {
    allow "apps" {
      digests = []
    }
    allow "apps" {
      digests = []
    }
  }
}
