package verifier

import "testing"

// CertGuardStreams is how many open streams d's certificate guard watches.
func CertGuardStreams(d *Daemon) int { return d.certs.openStreams() }

// CertGuardGoroutines counts the goroutines running a certificate guard's
// loop and those a guard started for one stream.
func CertGuardGoroutines(t testing.TB) (loops, perStream int) {
	c := guardGoroutines(t)
	return c.loops, c.perStream
}
