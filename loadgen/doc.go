// Package loadgen drives a Pulse verifier with a fleet of virtual agents, to
// measure how many agents one verifier holds and to check, under load, that
// every pulse still gets the verdict it deserves.
//
// A virtual agent is everything a real agent is on the wire and nothing it is
// on a host: its own ECDSA P-256 mTLS certificate from the verifier's agent
// CA, one gRPC connection over real TLS 1.3, payloads signed with
// internal/pulsesig, and TPM quotes in the TPM's exact wire formats
// (TPMS_ATTEST, TPMT_SIGNATURE) made by a software attestation key
// (tpm/quote.SignQuote). Its PCRs 0-9 are the values a real firmware event log
// replays to (a fixture from testdata/eventlogs), and its runtime PCR starts
// from that log's value and is extended with the agent's own CEL records
// (agent binary, two eBPF programs, Fortress state), exactly as the agent's
// launcher and pulse loop do. Its pulses take the verifier path a real
// agent's take: Challenge once, then Pulse with the next_nonce of each
// response, the firmware log sent only when the VerifierState says the
// verifier lacks it, runtime records sent from the acknowledged index on.
//
// # Enrollment: a load-test-only path
//
// A software AK cannot answer a credential-activation challenge for a real
// EK, so virtual agents are written straight into the verifier's store
// (Preregister: store.EnrollAgent with TPM=true, the software AK's public
// area and name, and a per-agent stand-in EK digest). This is for load tests
// only. Real devices enroll with Enroll + ActivateCredential, which binds the
// AK to a TPM's EK; nothing in the product reads or writes agents this way,
// and a verifier store that contains such agents is a test store.
//
// # Misbehaving agents
//
// A share of the fleet misbehaves on every pulse cycle, right after an
// honest pulse: it replays that captured pulse (REASON_NONCE_REPLAYED),
// signs a fresh pulse with a key that is not its certificate's
// (REASON_BAD_SIGNATURE), or reuses the nonce it just spent
// (REASON_NONCE_REPLAYED: its epoch is spent; older verifiers that pruned
// spent nonces answered REASON_NONCE_UNKNOWN). Silent agents pulse once and stop; the verifier's sweeper must mark
// them BLINDED once their deadline (heartbeat interval × missed) passed.
// Every honest pulse, including those of misbehaving agents, must be
// TRUSTED. The run's Summary says which expectations held.
package loadgen
