verifier = "verifier.example:7443"
tls {
  cert = "../tls/agent.crt"
  key  = "../tls/agent.key"
  ca   = "../tls/ca.crt"
  sever_name = "verifier.example"
}
intervall = "10s"
