// Package secretscan finds secrets in text a program wrote: log files,
// audit records, webhook bodies. It looks for three things:
//
//   - PEM private-key blocks ("-----BEGIN ... PRIVATE KEY-----"), whoever's
//     key it is;
//   - known secrets (a webhook HMAC secret, a private key's scalar or DER,
//     an admin token), given to New, in each encoding a program might
//     print them in: raw, hex (either case) and base64 (standard and URL
//     alphabets, padded or not, at every byte alignment, so a secret
//     embedded in a larger base64 blob is found too);
//   - assignments of a secret-named field ("secret", "token", "password",
//     "private_key", "hmac_key"...) to a value, as "key=value", "key: value"
//     or JSON "key":"value", except file and path fields and values that
//     are plainly redacted.
//
// A Finding names the file, line, column, kind and which known secret it
// is, never the secret's bytes, so the report itself leaks nothing.
package secretscan

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// MinSecretLen is the shortest secret New accepts: shorter values would be
// found by chance in unrelated text.
const MinSecretLen = 8

// minNeedle is the shortest encoded form searched for (base64 forms of a
// short secret at an odd alignment get short).
const minNeedle = 10

// Kinds of finding.
const (
	KindPEMPrivateKey = "pem_private_key"
	KindKnownSecret   = "known_secret"
	KindAssignment    = "secret_assignment"
)

// ErrSecretTooShort is returned by New for a secret shorter than MinSecretLen.
var ErrSecretTooShort = errors.New("secret too short to scan for")

// Secret is a value that must appear in no artefact.
type Secret struct {
	// Name says what it is ("webhook secret", "agent edge-1 key"); it is
	// what a Finding reports.
	Name  string
	Value []byte
}

// Finding is one secret found. It carries no secret bytes.
type Finding struct {
	File   string
	Line   int
	Column int
	Kind   string
	// Name is the known secret's name (KindKnownSecret), the field name
	// (KindAssignment) or the PEM block type (KindPEMPrivateKey).
	Name string
	// Encoding is how a known secret was written (raw, hex, base64...).
	Encoding string
}

func (f Finding) String() string {
	s := fmt.Sprintf("%s:%d:%d: %s %q", f.File, f.Line, f.Column, f.Kind, f.Name)
	if f.Encoding != "" {
		s += " (" + f.Encoding + ")"
	}
	return s
}

type needle struct {
	name, encoding string
	b              []byte
}

// Scanner scans text for secrets. It is safe for concurrent use once made.
type Scanner struct {
	needles []needle
}

var (
	pemKeyRE = regexp.MustCompile(`-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----`)
	// A secret-named field and its value: key=value, key: value,
	// "key":"value" (JSON, also with escaped quotes inside a log line).
	assignRE = regexp.MustCompile(`(?i)([a-z0-9_.-]*(?:secret|password|passwd|passphrase|token|private_?key|privkey|hmac_?key|api_?key|nonce_?key)[a-z0-9_.-]*)(?:\\?")?\s*[=:]\s*(?:\\?")?([^\s"\\,;}\]]+)`)
	bearerRE = regexp.MustCompile(`(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{16,})`)
)

// New returns a scanner for the generic patterns and the given secrets.
func New(secrets ...Secret) (*Scanner, error) {
	s := &Scanner{}
	for _, sec := range secrets {
		if len(sec.Value) < MinSecretLen {
			return nil, fmt.Errorf("secretscan: %s: %d bytes: %w", sec.Name, len(sec.Value), ErrSecretTooShort)
		}
		s.add(sec.Name, "raw", sec.Value)
		s.add(sec.Name, "hex", []byte(hex.EncodeToString(sec.Value)))
		s.add(sec.Name, "hex", []byte(strings.ToUpper(hex.EncodeToString(sec.Value))))
		for _, enc := range []struct {
			name string
			e    *base64.Encoding
		}{{"base64", base64.StdEncoding}, {"base64url", base64.URLEncoding}} {
			for off := 0; off < 3 && off < len(sec.Value); off++ {
				v := sec.Value[off:]
				// Only whole 3-byte groups: their characters do not depend
				// on what follows the secret in a larger blob.
				whole := len(v) / 3 * 3
				if whole == 0 {
					continue
				}
				s.add(sec.Name, enc.name, []byte(enc.e.EncodeToString(v[:whole])))
			}
		}
	}
	return s, nil
}

func (s *Scanner) add(name, encoding string, b []byte) {
	if len(b) < minNeedle {
		return
	}
	for _, n := range s.needles {
		if bytes.Equal(n.b, b) {
			return
		}
	}
	s.needles = append(s.needles, needle{name: name, encoding: encoding, b: b})
}

// redacted reports whether an assigned value is plainly not a secret: a
// redaction marker, a boolean, a placeholder or a short word.
func redacted(v string) bool {
	l := strings.ToLower(strings.Trim(v, `'"<>[]()*`))
	switch l {
	case "", "redacted", "hidden", "masked", "none", "null", "nil", "true", "false", "set", "unset", "present", "absent", "missing", "required", "optional", "invalid", "empty":
		return true
	}
	if strings.Trim(v, "*x.") == "" {
		return true
	}
	return len(v) < MinSecretLen
}

// nonSecretField reports whether a secret-named field holds a reference to
// a secret (a file, a path, an ID, a length), not the secret.
func nonSecretField(k string) bool {
	l := strings.ToLower(k)
	for _, suf := range []string{"_file", "-file", ".file", "file", "_path", "path", "_dir", "_id", "_name", "_len", "_length", "_bytes", "_sha256", "_digest", "_hash", "_fingerprint", "_set", "_count"} {
		if strings.HasSuffix(l, suf) {
			return true
		}
	}
	return false
}

// ScanBytes scans one artefact's content; name is what findings call it.
func (s *Scanner) ScanBytes(name string, b []byte) []Finding {
	var out []Finding
	line := 1
	for len(b) > 0 {
		text := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			text, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		out = append(out, s.scanLine(name, line, text)...)
		line++
	}
	return out
}

func (s *Scanner) scanLine(file string, line int, text []byte) []Finding {
	var out []Finding
	for _, m := range pemKeyRE.FindAllSubmatchIndex(text, -1) {
		out = append(out, Finding{File: file, Line: line, Column: m[0] + 1, Kind: KindPEMPrivateKey, Name: string(text[m[2]:m[3]])})
	}
	for _, n := range s.needles {
		if i := bytes.Index(text, n.b); i >= 0 {
			out = append(out, Finding{File: file, Line: line, Column: i + 1, Kind: KindKnownSecret, Name: n.name, Encoding: n.encoding})
		}
	}
	for _, m := range assignRE.FindAllSubmatchIndex(text, -1) {
		key, val := string(text[m[2]:m[3]]), string(text[m[4]:m[5]])
		if nonSecretField(key) || redacted(val) {
			continue
		}
		out = append(out, Finding{File: file, Line: line, Column: m[0] + 1, Kind: KindAssignment, Name: key})
	}
	for _, m := range bearerRE.FindAllSubmatchIndex(text, -1) {
		out = append(out, Finding{File: file, Line: line, Column: m[0] + 1, Kind: KindAssignment, Name: "bearer"})
	}
	return out
}

// ScanDir scans every regular file under dir (findings name files relative
// to dir), in path order.
func (s *Scanner) ScanDir(dir string) ([]Finding, error) {
	var out []Finding
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("secretscan: read %s: %w", path, err)
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			rel = path
		}
		out = append(out, s.ScanBytes(rel, b)...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("secretscan: scan %s: %w", dir, err)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].File != out[j].File {
			return out[i].File < out[j].File
		}
		return out[i].Line < out[j].Line
	})
	return out, nil
}

// KeySecrets returns the secrets of a PEM private key file's content: the
// key's PKCS#8 DER and its private scalar (EC), seed (Ed25519) or prime
// (RSA), each of which would give the key away.
func KeySecrets(name string, pemBytes []byte) ([]Secret, error) {
	var out []Secret
	for rest := pemBytes; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if !strings.HasSuffix(blk.Type, "PRIVATE KEY") {
			continue
		}
		out = append(out, Secret{Name: name + " (DER)", Value: blk.Bytes})
		key, err := parseKey(blk)
		if err != nil {
			return nil, fmt.Errorf("secretscan: %s: %w", name, err)
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey:
			d, err := k.Bytes()
			if err != nil {
				return nil, fmt.Errorf("secretscan: %s: %w", name, err)
			}
			out = append(out, Secret{Name: name + " (scalar)", Value: d})
		case ed25519.PrivateKey:
			out = append(out, Secret{Name: name + " (seed)", Value: k.Seed()})
		case *rsa.PrivateKey:
			if len(k.Primes) > 0 {
				out = append(out, Secret{Name: name + " (prime)", Value: k.Primes[0].Bytes()})
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("secretscan: %s: no PEM private key", name)
	}
	return out, nil
}

func parseKey(blk *pem.Block) (any, error) {
	switch blk.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(blk.Bytes)
	}
	return x509.ParsePKCS8PrivateKey(blk.Bytes)
}
