package config

import (
	"os"

	"github.com/pulse-attest/pulse/internal/hclconf"
)

// checkPrivateFile refuses a private key file that users other than the
// verifier's may read or write (any group or other permission bit): the
// verifier's TLS key and the directive signing key. A missing file is left
// to RequireFile.
func checkPrivateFile(f *hclconf.File, p string, path ...string) {
	st, err := os.Stat(p)
	if err != nil {
		return
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		f.Errorf(path, "private key readable by others", "%s has mode %04o: make it readable by the verifier only (chmod 600 %s)", p, perm, p)
	}
}
