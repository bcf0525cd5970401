# /etc/pulse/agent.hcl: the Pulse agent's configuration.
# Printed by `pulse-agent config example`; every key is documented in
# docs/config.md. Check an edit with
#   pulse-agent validate --config /etc/pulse/agent.hcl
# Relative paths are relative to this file's directory (/etc/pulse). The
# launcher measures this file into the runtime PCR before it starts the
# agent, so an edit takes effect (and is attested) at the next start.

# The verifier's agent listener, host:port; several replicas separated by
# commas (the agent fails over between them).
verifier = "verifier.example.net:7443"

tls {
  cert = "tls/agent.pem"     # this agent's certificate (pulse://agent/<id>); re-read when it changes
  key  = "tls/agent-key.pem" # its private key (mode 0600)
  ca   = "tls/ca.pem"        # CA(s) the verifier's certificate must chain to
  # server_name = "verifier.example.net" # default: the host of verifier
}

tpm = "auto" # auto: /dev/tpmrm0, else /dev/tpm0, else mTLS only; none; a device path; swtpm:SOCKET

# ak_handle           = "0x81020001" # persistent handle of the attestation key
# runtime_pcr         = 14           # must equal the verifier's runtime_pcr (11-15)
# runtime_log         = "/run/pulse-agent/runtime.cel"
# firmware_log        = "/sys/kernel/security/tpm0/binary_bios_measurements"
# state_dir           = "/var/lib/pulse-agent"
# interval            = "30s"        # heartbeat until the verifier sets another (1s-24h)
# partition           = ""           # the partition this agent expects (the verifier assigns it)
# binary_rehash_every = 10           # hash the running binary in full at least every N pulses
# release_code_pages  = true         # after each pulse, unmap the binary's code pages (they stay cached)
# log_level           = "info"
# log_json            = false

# The verifier's directive public key (PKIX PEM, Ed25519): quarantine and
# release directives are acted on only when signed with it. Unset: every
# quarantine and release is refused.
# directive_key = "tls/directive-key.pub.pem"
# Never quarantined by this agent's Shield, besides the verifier's addresses.
# protected_addresses = ["10.0.0.1", "10.0.1.0/24"]

# eBPF: Shield (quarantine by network), Sentinel (signals to the agent) and
# Fortress. pulse-agent.service grants the capabilities they need.
bpf {
  enabled = false # true: load and measure the programs (docs/ebpf.md)
  # pin_dir    = "/sys/fs/bpf/pulse"
  # interfaces = ["eth0"] # interfaces Shield attaches to (default: none)
}
