# Several mistakes at once: each is reported with its own position.
verifier = "verifier.example"
tls {
  cert = "../tls/missing.crt"
  key  = "../tls/agent.key"
  ca   = "../tls/ca.crt"
}
tpm         = "tpm0"
ak_handle   = "0x80000001"
runtime_pcr = 23
interval    = "30 seconds"
partition   = "edge/west"
log_level   = "loud"
bpf {
  enabled = true
  pin_dir = ""
}
