package verifier

import "strings"

// MaxAgentVersionLen bounds the agent version the verifier stores and shows.
const MaxAgentVersionLen = 64

// ReportedVersion is the agent_version of a verified pulse as the verifier
// keeps it: a claim of the agent (the binary's digest is what is
// attested), so reduced to printable ASCII without spaces ('?' for anything
// else) and cut to MaxAgentVersionLen bytes before it reaches the store,
// the dashboard or a terminal.
func ReportedVersion(v string) string {
	var b strings.Builder
	for _, r := range v {
		if b.Len() >= MaxAgentVersionLen {
			break
		}
		if r > ' ' && r < 0x7f {
			b.WriteRune(r)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}
