package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/termsafe"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/ektrust"
)

func init() {
	commands.Register(cli.Command{Name: "ek digest", Summary: "print this TPM's EK digest (for ek_allow_sha256) and check its certificate against EK roots (--tpm SPEC [--roots FILE,...])", Run: runEKDigest})
	commands.Register(cli.Command{Name: "ek approve", Summary: "add EK digests in bulk to the verifier's enrollment.ek_allow_sha256 (--config VERIFIER.hcl [--from FILE] [DIGEST...])", Run: runEKApprove})
}

// errBadDigest: a line of an approval list is not a 64-hex-character
// SHA-256.
var errBadDigest = errors.New("not an EK digest (64 hex characters)")

func runEKDigest(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ek digest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	spec := fs.String("tpm", "/dev/tpmrm0", "TPM to read: /dev/tpmrm0, or swtpm:SOCKET")
	roots := fs.String("roots", "", "comma-separated PEM files of EK roots/intermediates (the verifier's ek_roots) to check the EK certificate against")
	certOut := fs.String("cert-out", "", "write the EK certificate (PEM) to this file, to inspect it with openssl")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: pulsectl ek digest [--tpm SPEC] [--roots FILE,...]")
		return 2
	}
	t, err := tpm.Open(*spec, nil)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl ek digest: %v\n", err)
		return 1
	}
	defer t.Close()
	ek, err := t.EK()
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl ek digest: %v\n", err)
		return 1
	}
	sum := sha256.Sum256(ek.PublicBlob)
	fmt.Fprintf(stdout, "ek_sha256=%s\n", hex.EncodeToString(sum[:]))
	if len(ek.Certificate) == 0 {
		fmt.Fprintln(stdout, "ek_certificate=none (enroll it by digest: ek_allow_sha256)")
	} else if c, err := ektrust.ParseEKCertificate(ek.Certificate); err != nil {
		fmt.Fprintf(stdout, "ek_certificate=unparsable (%s)\n", termsafe.Line(err.Error()))
	} else {
		fmt.Fprintf(stdout, "ek_certificate_issuer=%s\n", termsafe.Line(c.Issuer.String()))
		fmt.Fprintf(stdout, "ek_certificate_not_after=%s\n", c.NotAfter.UTC().Format(time.RFC3339))
	}
	if *certOut != "" {
		if len(ek.Certificate) == 0 {
			fmt.Fprintln(stderr, "pulsectl ek digest: --cert-out: this TPM holds no EK certificate")
			return 1
		}
		if err := os.WriteFile(*certOut, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ek.Certificate}), 0o644); err != nil {
			fmt.Fprintf(stderr, "pulsectl ek digest: %v\n", err)
			return 1
		}
	}
	if *roots == "" {
		return 0
	}
	trust, err := ektrust.Load(strings.Split(*roots, ","), nil)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl ek digest: %v\n", err)
		return 1
	}
	if _, err := trust.Check(ek.PublicBlob, ek.Certificate, nil, time.Now(), ektrust.Options{}); err != nil {
		fmt.Fprintf(stdout, "ek_roots=refused (%s)\n", termsafe.Line(err.Error()))
		return 1
	}
	fmt.Fprintln(stdout, "ek_roots=ok (the certificate chains to the given roots and follows the TCG EK profile)")
	return 0
}

func runEKApprove(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ek approve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := verifierConfigFlag(fs)
	from := fs.String("from", "", "file of EK digests, one per line (the first field; '#' comments; '-' is stdin)")
	dryRun := fs.Bool("dry-run", false, "report what would change; write nothing")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	digests := append([]string(nil), fs.Args()...)
	if *from != "" {
		var r io.Reader = os.Stdin
		if *from != "-" {
			f, err := os.Open(*from)
			if err != nil {
				fmt.Fprintf(stderr, "pulsectl ek approve: %v\n", err)
				return 1
			}
			defer f.Close()
			r = f
		}
		more, err := readDigests(r, *from)
		if err != nil {
			fmt.Fprintf(stderr, "pulsectl ek approve: %v\n", err)
			return 1
		}
		digests = append(digests, more...)
	}
	if len(digests) == 0 {
		fmt.Fprintln(stderr, "usage: pulsectl ek approve --config VERIFIER.hcl [--from FILE|-] [DIGEST...]")
		return 2
	}
	for _, d := range digests {
		if err := checkDigest(d); err != nil {
			fmt.Fprintf(stderr, "pulsectl ek approve: %q: %v\n", termsafe.Line(d), err)
			return 1
		}
	}
	src, err := os.ReadFile(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl ek approve: %v\n", err)
		return 1
	}
	out, added, total, err := approveDigests(src, *cfgPath, digests)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl ek approve: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%d EK digest(s) added, %d already approved, %d in ek_allow_sha256\n", added, len(uniq(digests))-added, total)
	if *dryRun || added == 0 {
		return 0
	}
	if err := writeConfigAtomically(*cfgPath, out); err != nil {
		fmt.Fprintf(stderr, "pulsectl ek approve: %v\n", err)
		return 1
	}
	// The result must still be a valid configuration.
	if _, err := config.Load(*cfgPath); err != nil {
		fmt.Fprintf(stderr, "pulsectl ek approve: the rewritten configuration does not load (restore it from %s.bak): %v\n", *cfgPath, err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s (previous version: %s.bak); restart the verifier to apply it\n", *cfgPath, *cfgPath)
	return 0
}

func checkDigest(d string) error {
	if len(d) != 64 {
		return errBadDigest
	}
	if _, err := hex.DecodeString(d); err != nil {
		return errBadDigest
	}
	return nil
}

// readDigests reads one digest per line: the line's first field, so
// "DIGEST  device-name" lists work; blank lines and '#' comments are
// skipped. A bad line is an error naming it.
func readDigests(r io.Reader, name string) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		d := strings.ToLower(strings.Fields(line)[0])
		d = strings.TrimPrefix(d, "ek_sha256=")
		if err := checkDigest(d); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		out = append(out, d)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

func uniq(v []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range v {
		s = strings.ToLower(s)
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// approveDigests returns the configuration src with digests merged into
// enrollment.ek_allow_sha256 (sorted, without duplicates; the enrollment
// block is added when missing); the rest of the file, comments included,
// is kept. It returns how many digests were new and the list's size.
func approveDigests(src []byte, name string, digests []string) ([]byte, int, int, error) {
	f, diags := hclwrite.ParseConfig(src, name, hcl.Pos{Line: 1, Column: 1})
	if diags.HasErrors() {
		return nil, 0, 0, fmt.Errorf("parse %s: %w", name, diags)
	}
	blk := f.Body().FirstMatchingBlock("enrollment", nil)
	if blk == nil {
		blk = f.Body().AppendNewBlock("enrollment", nil)
	}
	existing, err := existingDigests(src, name)
	if err != nil {
		return nil, 0, 0, err
	}
	set := map[string]bool{}
	for _, d := range existing {
		set[strings.ToLower(d)] = true
	}
	added := 0
	for _, d := range uniq(digests) {
		if !set[d] {
			set[d] = true
			added++
		}
	}
	all := make([]string, 0, len(set))
	for d := range set {
		all = append(all, d)
	}
	sort.Strings(all)
	vals := make([]cty.Value, len(all))
	for i, d := range all {
		vals[i] = cty.StringVal(d)
	}
	blk.Body().SetAttributeValue("ek_allow_sha256", cty.ListVal(vals))
	return hclwrite.Format(f.Bytes()), added, len(all), nil
}

// existingDigests reads enrollment.ek_allow_sha256 as written (the file
// need not be a complete configuration for this).
func existingDigests(src []byte, name string) ([]string, error) {
	var doc struct {
		Enrollment *struct {
			Allow []string `hcl:"ek_allow_sha256,optional"`
			Rest  hcl.Body `hcl:",remain"`
		} `hcl:"enrollment,block"`
		Rest hcl.Body `hcl:",remain"`
	}
	if err := decodeHCL(src, name, &doc); err != nil {
		return nil, err
	}
	if doc.Enrollment == nil {
		return nil, nil
	}
	for _, d := range doc.Enrollment.Allow {
		if err := checkDigest(strings.ToLower(d)); err != nil {
			return nil, fmt.Errorf("%s: ek_allow_sha256 holds %q: %w", name, d, err)
		}
	}
	return doc.Enrollment.Allow, nil
}

// writeConfigAtomically keeps the previous file as PATH.bak and replaces
// PATH with b (same mode) by rename.
func writeConfigAtomically(path string, b []byte) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path+".bak", old, st.Mode().Perm()); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(st.Mode().Perm()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func decodeHCL(src []byte, name string, target any) error {
	f, diags := hclparse.NewParser().ParseHCL(src, name)
	if diags.HasErrors() {
		return fmt.Errorf("parse %s: %w", name, diags)
	}
	if diags := gohcl.DecodeBody(f.Body, nil, target); diags.HasErrors() {
		return fmt.Errorf("decode %s: %w", name, diags)
	}
	return nil
}
