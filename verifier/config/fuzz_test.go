package config_test

import (
	"testing"

	"github.com/pulse-attest/pulse/verifier/config"
)

// FuzzParse: any bytes give a config or an error, never a panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("tls {"))
	f.Add([]byte(`listen = 3`))
	f.Add([]byte("alerts {\n webhook \"x\" {\n url = \"https://a\"\n secret_file = \"s\"\n }\n}\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := config.Parse("fuzz.hcl", src)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
	})
}
