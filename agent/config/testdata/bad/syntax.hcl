verifier = "verifier.example:7443"
tls {
  cert = "../tls/agent.crt"
