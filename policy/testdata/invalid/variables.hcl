# Policies hold literal values only: no variables, no functions.
policy "edge" {
  match {
    agents = [var.agents]
  }
  tpm        = "required"
  clock_skew = upper("30s")
}
