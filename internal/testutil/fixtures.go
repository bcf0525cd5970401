package testutil

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Fixture is one real captured firmware event log and the PCR values its TPM
// reported.
type Fixture struct {
	Name        string
	Description string
	Log         []byte
	LogPath     string
	// PCRs maps bank name ("sha1", "sha256") to PCR index to digest.
	PCRs map[string]map[int][]byte
}

// LoadFixture reads testdata/eventlogs/NAME.bin and NAME.json.
func LoadFixture(t testing.TB, name string) Fixture {
	t.Helper()
	dir := EventLogDir(t)
	logPath := filepath.Join(dir, name+".bin")
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatalf("testutil: read fixture log: %v", err)
	}
	js, err := os.ReadFile(filepath.Join(dir, name+".json"))
	if err != nil {
		t.Fatalf("testutil: read fixture json: %v", err)
	}
	var doc struct {
		Description string                       `json:"description"`
		PCRs        map[string]map[string]string `json:"pcrs"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatalf("testutil: parse fixture json %s: %v", name, err)
	}
	f := Fixture{Name: name, Description: doc.Description, Log: raw, LogPath: logPath, PCRs: map[string]map[int][]byte{}}
	for bank, vals := range doc.PCRs {
		f.PCRs[bank] = map[int][]byte{}
		for k, v := range vals {
			idx, err := strconv.Atoi(k)
			if err != nil {
				t.Fatalf("testutil: fixture %s: bad PCR index %q", name, k)
			}
			d, err := hex.DecodeString(v)
			if err != nil {
				t.Fatalf("testutil: fixture %s: bad digest for PCR %s: %v", name, k, err)
			}
			f.PCRs[bank][idx] = d
		}
	}
	return f
}
