# A policy must say which agents it covers and whether they need a TPM.
policy "edge" {
  measured_boot {
    secure_boot {}
  }
}
