package config

import "testing"

// FuzzParse: any bytes give a config or an error, never a panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte("verifier = \"127.0.0.1:7443\"\ntls {\n cert = \"a\"\n key = \"b\"\n ca = \"c\"\n}\n"))
	f.Add([]byte("runtime_pcr = 16"))
	f.Add([]byte("bpf {"))
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := Parse("fuzz.hcl", src)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
	})
}
