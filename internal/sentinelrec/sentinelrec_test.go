package sentinelrec

import (
	"bytes"
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, c := range []Config{{}, {AgentTGID: 4242, ManagerTGID: 1, MapID: 77}, {AgentTGID: 1<<32 - 1, ManagerTGID: 0, MapID: 1<<32 - 1}} {
		got, err := Decode(Encode(c))
		if err != nil || got != c {
			t.Errorf("Decode(Encode(%+v)) = %+v, %v", c, got, err)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	for name, data := range map[string]string{
		"empty":           "",
		"no newline":      "agent_tgid 1\nmanager_tgid 1\ncfg_map_id 1",
		"missing field":   "agent_tgid 1\nmanager_tgid 1\n",
		"extra field":     "agent_tgid 1\nmanager_tgid 1\ncfg_map_id 1\nx 1\n",
		"wrong order":     "manager_tgid 1\nagent_tgid 1\ncfg_map_id 1\n",
		"leading zero":    "agent_tgid 01\nmanager_tgid 1\ncfg_map_id 1\n",
		"sign":            "agent_tgid +1\nmanager_tgid 1\ncfg_map_id 1\n",
		"overflow":        "agent_tgid 4294967296\nmanager_tgid 1\ncfg_map_id 1\n",
		"empty value":     "agent_tgid \nmanager_tgid 1\ncfg_map_id 1\n",
		"two spaces":      "agent_tgid  1\nmanager_tgid 1\ncfg_map_id 1\n",
		"crlf":            "agent_tgid 1\r\nmanager_tgid 1\r\ncfg_map_id 1\r\n",
		"oversized input": string(bytes.Repeat([]byte("a"), MaxRecordBytes+1)),
	} {
		if _, err := Decode([]byte(data)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Decode = %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode(Config{AgentTGID: 10, ManagerTGID: 1, MapID: 3}))
	f.Add([]byte("agent_tgid 0\nmanager_tgid 0\ncfg_map_id 0\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// Only canonical input decodes.
		if !bytes.Equal(Encode(c), data) {
			t.Fatalf("non-canonical input %q decoded to %+v", data, c)
		}
	})
}
