verifier = "verifier.example:7443"
tls {
  cert = "../tls/agent.crt"
  key  = "../tls/agent.key"
  ca   = "../tls/ca.crt"
}
runtime_pcr = 16
