// Package policy is Pulse's policy language: HCL v2 files that a security
// team edits and reviews, parsed into a Set of named policies, validated with
// compiler-style file:line:col diagnostics, and evaluated against verified
// evidence (replayed firmware events, the replayed runtime log and the quoted
// PCR values) into findings.
//
// The package is pure: it imports hcl, go-cty, go-hclog and the standard
// library only (TestImportRule enforces it). The verifier fills an Evidence
// value from what it verified; pulsectl reads the same value from JSON
// evidence files ("policy test", "policy derive").
//
// Fail-closed rules (docs/policy.md): a missing, unreadable or empty policy file
// is an error, never an "accept everything" default; an agent that no policy
// selects is denied; a rule that needs evidence the verifier did not verify
// fails rather than passes. The guide for security engineers is
// docs/policy.md; annotated examples are in policy/examples/.
package policy
