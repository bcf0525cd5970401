package main

import (
	"slices"
	"strings"
	"testing"
)

// TestFlagsFirst: positional arguments move after the flags, values stay
// with their flags, bool flags take none, "--" ends the flags.
func TestFlagsFirst(t *testing.T) {
	for _, c := range []struct {
		in, want []string
	}{
		{[]string{"edge-1", "--for", "30m"}, []string{"--for", "30m", "--", "edge-1"}},
		{[]string{"--admin", "https://v:8443", "edge-1", "--for=30m", "--json"}, []string{"--admin", "https://v:8443", "--for=30m", "--json", "--", "edge-1"}},
		{[]string{"--list", "--json"}, []string{"--list", "--json"}},
		{[]string{"--reason", "-weird", "edge-1"}, []string{"--reason", "-weird", "--", "edge-1"}},
		{[]string{"--for", "1h", "--", "--odd-agent"}, []string{"--for", "1h", "--", "--odd-agent"}},
	} {
		if got := flagsFirst(c.in, "json", "list"); !slices.Equal(got, c.want) {
			t.Errorf("flagsFirst(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestMaintenanceCLIUsage: a window needs one agent and a positive
// duration; --list takes neither; a verifier without maintenance windows
// answers 501, reported as a failure.
func TestMaintenanceCLIUsage(t *testing.T) {
	e := startAdminServer(t)
	for _, args := range [][]string{
		{"edge-1"},                          // no duration
		{"--for", "30m"},                    // no agent
		{"edge-1", "edge-2", "--for", "1h"}, // two agents
		{"edge-1", "--for", "-1h"},          // negative
		{"--list", "edge-1"},                // list takes no agent
	} {
		if code, _, _ := runCmd(t, "agents maintenance", e.byToken(args...)...); code != 2 {
			t.Errorf("agents maintenance %v = %d, want 2", args, code)
		}
	}
	code, _, errOut := runCmd(t, "agents maintenance", e.byCert("edge-1", "--for", "30m")...)
	if code != 1 || !strings.Contains(errOut, "HTTP 501") {
		t.Errorf("verifier without maintenance windows = %d: %s", code, errOut)
	}
}
