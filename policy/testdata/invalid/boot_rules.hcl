policy "edge" {
  match {
    agents = ["*"]
  }
  tpm = "required"

  measured_boot {
    bank = "sha257"
    pcr "24" {
      values = ["00"]
    }
    pcr "07" {
      values = ["00"]
    }
    allow "apps" {
      types = ["EV_EFI_BOOT_SERVICES_APP", "EV_IPL"]
      pcrs  = [4, 30]
    }
    forbid "nothing" {
      digests = []
    }
  }
}
