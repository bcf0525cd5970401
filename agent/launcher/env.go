package launcher

import (
	"fmt"
	"slices"
	"strings"
)

// SafePath is the PATH the agent gets, whatever the launcher's was. The
// agent runs no external programs today; a fixed root-owned search path
// keeps it that way should one ever be added.
const SafePath = "/usr/sbin:/usr/bin:/sbin:/bin"

// keptEnv are the variables passed through by default: none of them
// changes what the agent does, only how it presents it.
//
//   - TZ: the time zone of log timestamps.
//   - LANG, LANGUAGE, LC_*: the locale (the Go runtime ignores it; kept for
//     anything the agent might print through a C library one day).
//   - NOTIFY_SOCKET: systemd's readiness socket (Type=notify units).
var keptEnv = []string{"LANG", "LANGUAGE", "NOTIFY_SOCKET", "TZ"}

const keptEnvPrefix = "LC_"

// neverKept may not be passed even when named with KeepEnv:
//
//   - LD_*: the dynamic loader's (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT...)
//     — inert against the static agent Pulse builds, but a dynamically
//     linked build would run code from them that no record shows.
//   - GODEBUG: turns Go run-time and library behaviour back to older,
//     weaker settings (TLS and X.509 among them); the agent's own settings
//     are compiled in (//go:debug) and so part of the measured binary.
//   - GOTRACEBACK: "crash" makes a fault dump core, with the agent's TLS
//     key in it; the default (single goroutine, no core) is kept.
//   - SSL_CERT_FILE, SSL_CERT_DIR: would add trust roots to anything using
//     the system pool.
//   - PATH: fixed to SafePath.
//   - PULSE_AGENT_*: set by the launcher itself.
var neverKept = []string{"GODEBUG", "GOTRACEBACK", "PATH", "SSL_CERT_DIR", "SSL_CERT_FILE"}

var neverKeptPrefixes = []string{"LD_", "PULSE_AGENT_"}

// checkKeepName refuses names KeepEnv may not hold.
func checkKeepName(name string) error {
	if !validEnvName(name) {
		return fmt.Errorf("launch: %q is not an environment variable name", name)
	}
	if slices.Contains(neverKept, name) {
		return fmt.Errorf("launch: %s is never passed to the agent", name)
	}
	for _, p := range neverKeptPrefixes {
		if strings.HasPrefix(name, p) {
			return fmt.Errorf("launch: %s* variables are never passed to the agent", p)
		}
	}
	return nil
}

func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i, c := range name {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// AgentEnv reduces env (NAME=VALUE entries) to what the agent is given:
// PATH=SafePath, the variables of the default allow-list present in env,
// and those named in keep (which may not name LD_*, GODEBUG, GOTRACEBACK,
// SSL_CERT_*, PATH or PULSE_AGENT_*). Everything else is dropped. When a
// name appears twice the first entry wins (as getenv(3) and os.Getenv
// read it). The result is sorted by name: it is what the launcher measures.
func AgentEnv(env, keep []string) ([]string, error) {
	for _, k := range keep {
		if err := checkKeepName(k); err != nil {
			return nil, err
		}
	}
	allowed := func(name string) bool {
		return slices.Contains(keptEnv, name) || len(name) > len(keptEnvPrefix) && strings.HasPrefix(name, keptEnvPrefix) && validEnvName(name) ||
			slices.Contains(keep, name)
	}
	seen := map[string]bool{"PATH": true}
	out := []string{"PATH=" + SafePath}
	for _, kv := range env {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || seen[name] || !allowed(name) || strings.IndexByte(kv, 0) >= 0 {
			continue
		}
		seen[name] = true
		out = append(out, kv)
	}
	return sortedEnv(out), nil
}

// envNames lists the names of env's entries (for logs: values may be
// anything).
func envNames(env []string) []string {
	names := make([]string, 0, len(env))
	for _, kv := range env {
		n, _, _ := strings.Cut(kv, "=")
		names = append(names, n)
	}
	return names
}

// droppedNames lists the names in env that AgentEnv left out of kept (PATH,
// always replaced, is not listed).
func droppedNames(env, kept []string) []string {
	keptNames := envNames(kept)
	var out []string
	for _, n := range envNames(env) {
		if n != "PATH" && !slices.Contains(keptNames, n) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}
