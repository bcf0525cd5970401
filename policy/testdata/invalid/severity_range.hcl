policy "edge" {
  match {
    agents = ["*"]
  }
  tpm = "required"

  on_failure {
    severity = 0
  }

  measured_boot {
    severity = 5
    secure_boot {
      severity = 1.5
      mode     = "enforcing"
    }
  }
}
