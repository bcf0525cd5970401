# /etc/pulse/verifier.hcl: the Pulse verifier's configuration.
# Printed by `pulse-verifier config example`; every key is documented in
# docs/config.md (type, default, what a reload changes). Check an edit with
#   pulse-verifier validate --config /etc/pulse/verifier.hcl
# Relative paths are relative to this file's directory (/etc/pulse). The
# verifier reads this file at start only; `systemctl reload pulse-verifier`
# (SIGHUP) re-reads the certificate, key, CA and policy files it names.

# Agent-facing gRPC listener (mutual TLS with agent certificates; also
# serves grpc.health.v1 and server reflection to the same certificates).
listen = "0.0.0.0:7443"

# Operator listener: dashboard, JSON API, /metrics. Needs tls.operator_ca
# and/or admin_token_file. Unset: no admin listener.
# admin_listen = "127.0.0.1:7444"

# Bearer token for the admin listener (a file, mode 0600, owned by the
# verifier's user). Unset: operator certificates only.
# admin_token_file = "/var/lib/pulse/admin-token"

tls {
  cert     = "tls/verifier.pem"     # the verifier's certificate (pulse://verifier/<name>)
  key      = "tls/verifier-key.pem" # its private key (mode 0600)
  agent_ca = "tls/agent-ca.pem"     # CA(s) that issue agent certificates
  # operator_ca = "tls/operator-ca.pem" # CA(s) of operator certificates (admin listener)

  # reload_interval          = "10s" # how often the files above are checked for changes
  # max_connection_age       = "1h"  # agents handshake again at least this often
  # max_connection_age_grace = "1m"
  # revocation_refresh       = "5s"  # revocation list re-read from the store
  # probe_alert_after        = 20    # refused handshakes per address and minute before a probe alert
}

# The state store. sqlite: one verifier, a file (created mode 0600; the
# verifier refuses a group- or world-readable one). postgres: several
# replicas sharing one database (docs/config.md has a worked example).
store {
  engine = "sqlite"
  dsn    = "/var/lib/pulse/verifier.db"
  # engine = "postgres"
  # dsn    = "postgres://pulse@db.example.net:5432/pulse?sslmode=verify-full"
}

# Policy files (docs/policy.md); re-read when they change and on reload.
policy_files = ["policy.hcl"]

enrollment {
  # PEM files of TPM vendors' EK root and intermediate certificates.
  # ek_roots = ["ek-roots/vendor-root.pem"]
  # SHA-256 of EK public areas allowed without an EK certificate.
  # ek_allow_sha256 = ["<64 hex characters>"]
  # timeout                = "5m"  # how long a credential-activation challenge stays open
  # allow_nonconforming_ek = false # accept EK certificates without the TCG EKU or TPM SAN
  # ek_max_agents          = 1     # agent IDs one EK may back
  # rate_per_minute        = 30    # Enroll calls per source address and minute
  # default_partition      = "default"
  # partition "edge" {
  #   agents = ["edge-*"]         # agent ID globs, first matching block wins
  # }
}

# nonce_ttl     = "2m"  # how long a challenge nonce may be answered
# clock_skew    = "30s" # tolerated difference between agent and verifier clocks
# allow_tpmless = false # let agents without a TPM enroll (the policy's tpm mode decides)
# startup_grace = "2m"  # no agent is BLINDED this soon after a verifier start
# runtime_pcr   = 14    # the PCR agents' runtime logs extend (11-15)
# replica_id    = ""    # this replica's name (default hostname-pid)
# log_level     = "info"
# log_json      = false

# Soft memory limit of the verifier process (as GOMEMLIMIT, which it
# overrides): the collector runs more often near it, trading CPU for
# resident memory. Rule: 1.25 x agents x 64 KiB + 100 MiB (docs/config.md,
# "Memory limit"). Unset: GOMEMLIMIT if set, else no limit.
# memory_limit = "900MiB" # for 10,000 agents

alerts {
  # The append-only, hash-chained audit log (created mode 0600).
  audit_log = "/var/lib/pulse/audit.log"
  # webhook "siem" {
  #   url         = "https://siem.example.net/pulse"
  #   secret_file = "/var/lib/pulse/webhook-siem.secret" # mode 0600, owned by the verifier's user
  # }
}

# pulses {
#   transient_alert_after       = 5 # transient failures in a row before an alert
#   clock_desync_escalate_after = 5 # CLOCK_DESYNC pulses in a row before UNTRUSTED
# }

# firmware_logs {
#   per_agent   = 4        # distinct firmware logs kept per agent
#   cache_bytes = 67108864 # parsed-log cache (64 MiB)
# }

# Never quarantined: this verifier, its replicas, gateways, proxies.
# protected_addresses = ["10.0.0.1", "10.0.1.0/24"]
# isolation_hold      = "24h" # how long an operator's release holds off isolation at most
# agent_address_ttl   = "24h" # how long an agent's last address stays registered to it
# directive_key       = "/var/lib/pulse/directive-key.pem" # Ed25519 PKCS#8, mode 0600; unset: generated into the store
