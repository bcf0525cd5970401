package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/internal/pki"
)

func init() {
	commands.Register(cli.Command{Name: "pki init", Summary: "create a demo certificate authority (DIR/ca.pem, DIR/ca-key.pem)", Run: runPKIInit})
	commands.Register(cli.Command{Name: "pki issue", Summary: "issue an agent, verifier or operator certificate from the demo CA", Run: runPKIIssue})
}

const (
	caCertName = "ca.pem"
	caKeyName  = "ca-key.pem"
)

// listFlag collects a repeatable, comma-separable flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// parseFlags parses args into fs and refuses positional arguments. It
// returns the exit code to use when parsing did not succeed.
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return 2, false
	}
	return 0, true
}

func runPKIInit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pulsectl pki init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory for ca.pem and ca-key.pem (created with mode 0700 if missing)")
	name := fs.String("name", "Pulse demo CA", "CA subject common name")
	validity := fs.Duration("validity", pki.DefaultCAValidity, "CA validity")
	force := fs.Bool("force", false, "overwrite an existing CA")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *dir == "" {
		fmt.Fprintln(stderr, "pulsectl pki init: --dir is required")
		return 2
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		fmt.Fprintf(stderr, "pulsectl pki init: %v\n", err)
		return 1
	}
	ca, err := pki.NewCA(*name, *validity)
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl pki init: %v\n", err)
		return 1
	}
	certFile, keyFile := filepath.Join(*dir, caCertName), filepath.Join(*dir, caKeyName)
	if err := ca.WriteFiles(certFile, keyFile, *force); err != nil {
		if errors.Is(err, os.ErrExist) {
			fmt.Fprintf(stderr, "pulsectl pki init: %v (use --force to replace the CA; every certificate it issued stops verifying)\n", err)
		} else {
			fmt.Fprintf(stderr, "pulsectl pki init: %v\n", err)
		}
		return 1
	}
	sum := sha256.Sum256(ca.Cert.Raw)
	fmt.Fprintf(stdout, "CA %q valid until %s\n", ca.Cert.Subject.CommonName, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "  certificate  %s\n", certFile)
	fmt.Fprintf(stdout, "  private key  %s (mode 0600; keep it off the fleet)\n", keyFile)
	fmt.Fprintf(stdout, "  sha256       %s\n", hex.EncodeToString(sum[:]))
	return 0
}

func runPKIIssue(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pulsectl pki issue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory holding ca.pem and ca-key.pem (from pki init)")
	roleFlag := fs.String("role", "", "agent, verifier or operator")
	id := fs.String("id", "", "agent ID / verifier or operator name, [A-Za-z0-9._-]{1,128}")
	var dns, ips listFlag
	fs.Var(&dns, "dns", "DNS SAN (repeatable or comma-separated; verifier default: localhost)")
	fs.Var(&ips, "ip", "IP SAN (repeatable or comma-separated; verifier default: 127.0.0.1,::1)")
	keyTypeFlag := fs.String("key-type", string(pki.KeyECDSAP256), "ecdsa-p256, ed25519 or rsa-3072")
	out := fs.String("out", "", "output prefix: writes PREFIX.pem and PREFIX-key.pem (default DIR/<role>-<id>)")
	validity := fs.Duration("validity", pki.DefaultLeafValidity, "certificate validity (capped at the CA's expiry)")
	force := fs.Bool("force", false, "overwrite existing files (a running daemon hot-reloads them)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "pulsectl pki issue: "+format+"\n", a...)
		return 2
	}
	if *dir == "" {
		return usage("--dir is required")
	}
	role, err := pki.ParseRole(*roleFlag)
	if err != nil {
		return usage("--role: %v (want agent, verifier or operator)", err)
	}
	if err := pki.ValidateID(*id); err != nil {
		return usage("--id: %v", err)
	}
	keyType, err := pki.ParseKeyType(*keyTypeFlag)
	if err != nil {
		return usage("--key-type: %v", err)
	}
	var parsedIPs []net.IP
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return usage("--ip %q is not an IP address", s)
		}
		parsedIPs = append(parsedIPs, ip)
	}

	ca, err := pki.LoadCA(filepath.Join(*dir, caCertName), filepath.Join(*dir, caKeyName))
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl pki issue: %v\n", err)
		return 1
	}
	is, err := pki.Issue(ca, pki.Request{Role: role, ID: *id, DNSNames: dns, IPs: parsedIPs, KeyType: keyType, Validity: *validity})
	if err != nil {
		fmt.Fprintf(stderr, "pulsectl pki issue: %v\n", err)
		return 1
	}
	prefix := *out
	if prefix == "" {
		prefix = filepath.Join(*dir, string(role)+"-"+*id)
	}
	certFile, keyFile := prefix+".pem", prefix+"-key.pem"
	if err := is.WriteFiles(certFile, keyFile, *force); err != nil {
		if errors.Is(err, os.ErrExist) {
			fmt.Fprintf(stderr, "pulsectl pki issue: %v (use --force to replace it)\n", err)
		} else {
			fmt.Fprintf(stderr, "pulsectl pki issue: %v\n", err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s (%s key) serial %s valid until %s\n", is.Identity, keyType, is.Cert.SerialNumber, is.Cert.NotAfter.UTC().Format(time.RFC3339))
	if len(is.Cert.DNSNames) > 0 || len(is.Cert.IPAddresses) > 0 {
		var sans []string
		sans = append(sans, is.Cert.DNSNames...)
		for _, ip := range is.Cert.IPAddresses {
			sans = append(sans, ip.String())
		}
		fmt.Fprintf(stdout, "  names        %s\n", strings.Join(sans, ", "))
	}
	fmt.Fprintf(stdout, "  certificate  %s\n", certFile)
	fmt.Fprintf(stdout, "  private key  %s (mode 0600)\n", keyFile)
	return 0
}
