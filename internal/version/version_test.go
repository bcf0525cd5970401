package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func buildInfo(version string, settings ...string) *debug.BuildInfo {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/pulse-attest/pulse", Version: version}}
	for i := 0; i+1 < len(settings); i += 2 {
		bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
	}
	return bi
}

func TestFromBuildInfo(t *testing.T) {
	const rev = "b6d9127a0c1e55aa00112233445566778899aabb"
	for _, tc := range []struct {
		name                     string
		bi                       *debug.BuildInfo
		ldVersion, ldRev, ldDate string
		wantShort, wantString    string
	}{{
		name:       "no build information",
		wantShort:  "(devel)",
		wantString: "(devel) (" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")",
	}, {
		name:       "tagged release from VCS",
		bi:         buildInfo("v0.4.0", "vcs.revision", rev, "vcs.time", "2026-12-07T07:11:29Z", "vcs.modified", "false", "GOOS", "linux", "GOARCH", "arm64"),
		wantShort:  "v0.4.0+b6d9127a0c1e",
		wantString: "v0.4.0 (revision b6d9127a0c1e, built 2026-12-07T07:11:29Z, go1.26.8 linux/arm64)",
	}, {
		name:       "pseudo-version of a modified tree names the revision once",
		bi:         buildInfo("v0.0.0-20261207071129-b6d9127a0c1e+dirty", "vcs.revision", rev, "vcs.time", "2026-12-07T07:11:29Z", "vcs.modified", "true"),
		wantShort:  "v0.0.0-20261207071129-b6d9127a0c1e+dirty",
		wantString: "v0.0.0-20261207071129-b6d9127a0c1e+dirty (revision b6d9127a0c1e (modified), built 2026-12-07T07:11:29Z, go1.26.8 " + runtime.GOOS + "/" + runtime.GOARCH + ")",
	}, {
		name:       "link-time variables win",
		bi:         buildInfo("(devel)", "vcs.revision", rev, "vcs.time", "2026-12-07T07:11:29Z"),
		ldVersion:  "v1.2.3",
		ldRev:      "0123456789abcdef0123",
		ldDate:     "2026-01-02T03:04:05+01:00",
		wantShort:  "v1.2.3+0123456789ab",
		wantString: "v1.2.3 (revision 0123456789ab, built 2026-01-02T02:04:05Z, go1.26.8 " + runtime.GOOS + "/" + runtime.GOARCH + ")",
	}, {
		name:       "modified tree without a pseudo-version",
		bi:         buildInfo("", "vcs.revision", rev, "vcs.modified", "true", "vcs.time", "not a time"),
		wantShort:  "(devel)+b6d9127a0c1e+dirty",
		wantString: "(devel) (revision b6d9127a0c1e (modified), go1.26.8 " + runtime.GOOS + "/" + runtime.GOARCH + ")",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			in := FromBuildInfo(tc.bi, tc.ldVersion, tc.ldRev, tc.ldDate)
			if got := in.Short(); got != tc.wantShort {
				t.Errorf("Short() = %q, want %q", got, tc.wantShort)
			}
			if got := in.String(); got != tc.wantString {
				t.Errorf("String() = %q, want %q", got, tc.wantString)
			}
			if strings.ContainsAny(in.Short(), " \t\n") {
				t.Errorf("Short() %q is not one token", in.Short())
			}
		})
	}
}

func TestBuildDateUTC(t *testing.T) {
	in := FromBuildInfo(buildInfo("v1.0.0", "vcs.time", "2026-12-07T08:11:29+01:00"), "", "", "")
	if want := time.Date(2026, 12, 7, 7, 11, 29, 0, time.UTC); !in.BuildDate.Equal(want) || in.BuildDate.Location() != time.UTC {
		t.Fatalf("build date %v, want %v in UTC", in.BuildDate, want)
	}
}

// TestGetRunningBinary: the test binary itself has build information, so Get
// names the module and this toolchain.
func TestGetRunningBinary(t *testing.T) {
	in := Get()
	if in.GoVersion != runtime.Version() {
		t.Errorf("go version %q, want %q", in.GoVersion, runtime.Version())
	}
	if in.Version == "" || Agent() == "" {
		t.Errorf("empty version: %+v", in)
	}
	if l := Line("pulse-x"); !strings.HasPrefix(l, "pulse-x "+in.Version+" (") {
		t.Errorf("Line = %q", l)
	}
}
