package tpm

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in      string
		want    Spec
		wantErr bool
	}{
		{in: "none", want: Spec{Kind: KindNone}},
		{in: "auto", want: Spec{Kind: KindAuto}},
		{in: " auto\n", want: Spec{Kind: KindAuto}},
		{in: "sim", want: Spec{Kind: KindSim}},
		{in: "sim:42", want: Spec{Kind: KindSim, Seed: 42, HasSeed: true}},
		{in: "sim:-7", want: Spec{Kind: KindSim, Seed: -7, HasSeed: true}},
		{in: "/dev/tpmrm0", want: Spec{Kind: KindDevice, Path: "/dev/tpmrm0"}},
		{in: "device:/dev/tpm0", want: Spec{Kind: KindDevice, Path: "/dev/tpm0"}},
		{in: "swtpm:/run/swtpm/tpm.sock", want: Spec{Kind: KindSwtpm, Path: "/run/swtpm/tpm.sock"}},
		{in: "swtpm:rel/tpm.sock", want: Spec{Kind: KindSwtpm, Path: "rel/tpm.sock"}},
		{in: "", wantErr: true},
		{in: "sim:", wantErr: true},
		{in: "sim:abc", wantErr: true},
		{in: "swtpm:", wantErr: true},
		{in: "device:", wantErr: true},
		{in: "device:dev/tpm0", wantErr: true},
		{in: "tpm0", wantErr: true},
		{in: "mssim:localhost:2321", wantErr: true},
		{in: "None", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSpec(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrBadSpec) {
					t.Fatalf("ParseSpec(%q) = %+v, %v; want ErrBadSpec", tc.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSpec(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Fatalf("ParseSpec(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
			again, err := ParseSpec(got.String())
			if err != nil || again != got {
				t.Fatalf("round trip of %q via %q: %+v, %v", tc.in, got.String(), again, err)
			}
		})
	}
}

func TestOpenNoTPM(t *testing.T) {
	if _, err := Open("none", nil); !errors.Is(err, ErrNoTPM) {
		t.Fatalf("Open(none) = %v, want ErrNoTPM", err)
	}
	dir := t.TempDir()
	if _, err := resolveAuto([]string{filepath.Join(dir, "tpmrm0"), filepath.Join(dir, "tpm0")}); !errors.Is(err, ErrNoTPM) {
		t.Fatalf("auto without devices = %v, want ErrNoTPM", err)
	}
	got, err := resolveAuto([]string{filepath.Join(dir, "tpmrm0"), dir})
	if err != nil || got.Kind != KindDevice || got.Path != dir {
		t.Fatalf("auto picks %+v, %v; want the second path", got, err)
	}
	if _, err := Open("bogus", nil); !errors.Is(err, ErrBadSpec) {
		t.Fatalf("Open(bogus) = %v, want ErrBadSpec", err)
	}
	// A path that is not a unix socket, and one that does not exist.
	if _, err := Open("swtpm:"+dir, nil); err == nil {
		t.Fatal("Open(swtpm:<directory>) succeeded")
	}
	if _, err := Open("device:"+filepath.Join(dir, "nope"), nil); err == nil {
		t.Fatal("Open of a missing device succeeded")
	}
}
