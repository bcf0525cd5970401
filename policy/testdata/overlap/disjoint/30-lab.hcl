policy "lab" {
  match {
    agents = ["lab-*"]
  }
  tpm = "optional"
  measured_boot {
    secure_boot {}
  }
}

policy "lab-gpu" {
  match {
    agents = ["lab?gpu*"]
  }
  tpm = "optional"
  measured_boot {
    secure_boot {}
  }
}
