// Package version says which build of Pulse is running: the module version,
// the VCS revision and whether the tree was modified, the build date and the
// Go version. Most of it comes from the build information the Go toolchain
// embeds (debug.ReadBuildInfo, with -buildvcs); the release build may set the
// variables below with -ldflags "-X" where the toolchain knows nothing (a
// version from a tag when building from a tarball, a reproducible build date
// from SOURCE_DATE_EPOCH). The package is pure: no I/O, no globals changed.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Set at link time by `make release` / `make build`
// (-X github.com/pulse-attest/pulse/internal/version.version=...). Empty
// means "ask the build information".
var (
	version   string
	revision  string
	buildDate string // RFC 3339
)

// Info describes one build.
type Info struct {
	// Module is the main module's path.
	Module string `json:"module"`
	// Version is the release version ("v0.4.0"), or the pseudo-version the
	// toolchain derived from VCS, or "(devel)" when nothing is known.
	Version string `json:"version"`
	// Revision is the VCS commit ("" when built without VCS information).
	Revision string `json:"revision,omitempty"`
	// Modified is true when the working tree had uncommitted changes.
	Modified bool `json:"modified,omitempty"`
	// BuildDate is the commit time (reproducible builds carry no wall-clock
	// time) or what the build set; zero when unknown.
	BuildDate time.Time `json:"build_date,omitzero"`
	// GoVersion is the toolchain that built the binary.
	GoVersion string `json:"go_version"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
}

// Get returns the running binary's build.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return FromBuildInfo(bi, version, revision, buildDate)
}

// FromBuildInfo combines build information (nil when the binary has none)
// with link-time overrides (empty: not set). Overrides win.
func FromBuildInfo(bi *debug.BuildInfo, ldVersion, ldRevision, ldDate string) Info {
	in := Info{Version: "(devel)", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		in.Module = bi.Main.Path
		if bi.Main.Version != "" {
			in.Version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		var goos, goarch string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				in.Revision = s.Value
			case "vcs.modified":
				in.Modified = s.Value == "true"
			case "vcs.time":
				if t, err := time.Parse(time.RFC3339, s.Value); err == nil {
					in.BuildDate = t.UTC()
				}
			case "GOOS":
				goos = s.Value
			case "GOARCH":
				goarch = s.Value
			}
		}
		if goos != "" && goarch != "" {
			in.Platform = goos + "/" + goarch
		}
	}
	if ldVersion != "" {
		in.Version = ldVersion
	}
	if ldRevision != "" {
		in.Revision = ldRevision
	}
	if ldDate != "" {
		if t, err := time.Parse(time.RFC3339, ldDate); err == nil {
			in.BuildDate = t.UTC()
		}
	}
	// The toolchain marks a modified tree in the pseudo-version too.
	if strings.HasSuffix(in.Version, "+dirty") {
		in.Modified = true
	}
	return in
}

// ShortRevision is the first 12 characters of the revision.
func (i Info) ShortRevision() string {
	if len(i.Revision) > 12 {
		return i.Revision[:12]
	}
	return i.Revision
}

// Short is the one-token version the agent reports to the verifier
// (agent_version) and logs: the version, plus the short revision when the
// version does not already name it, plus "+dirty" for a modified tree.
// Example: "v0.4.0", "v0.0.0-20261207071129-b6d9127a0c1e+dirty",
// "(devel)+b6d9127a0c1e".
func (i Info) Short() string {
	s := i.Version
	if r := i.ShortRevision(); r != "" && !strings.Contains(s, r) {
		s += "+" + r
	}
	if i.Modified && !strings.HasSuffix(s, "+dirty") && !strings.HasSuffix(s, ".dirty") {
		s += "+dirty"
	}
	return s
}

// String is what `--version` prints after the program name:
// "v0.4.0 (revision b6d9127a0c1e, built 2026-12-07T07:11:29Z, go1.26.8 linux/amd64)".
func (i Info) String() string {
	var parts []string
	if i.Revision != "" {
		r := "revision " + i.ShortRevision()
		if i.Modified {
			r += " (modified)"
		}
		parts = append(parts, r)
	}
	if !i.BuildDate.IsZero() {
		parts = append(parts, "built "+i.BuildDate.Format(time.RFC3339))
	}
	parts = append(parts, i.GoVersion+" "+i.Platform)
	return fmt.Sprintf("%s (%s)", i.Version, strings.Join(parts, ", "))
}

// Line is the whole `--version` line for program.
func Line(program string) string { return program + " " + Get().String() }

// Agent is Short() of the running binary: what pulse-agent reports as
// agent_version.
func Agent() string { return Get().Short() }
