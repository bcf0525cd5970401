policy "edge" {
  match {
    agents = ["*"]
  }
  tpm        = "required"
  clock_skew = "thirty seconds"

  heartbeat {
    interval = 30
    grace    = "48h"
  }
}
