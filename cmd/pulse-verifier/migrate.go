package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
)

// exitPending is migrate --check's exit code when migrations are pending,
// so an upgrade script can tell "behind" from "broken" (1).
const exitPending = 10

func init() {
	commands.Register(cli.Command{Name: "migrate", Summary: "report (--check) or apply (--apply) store schema migrations (--config FILE)", Run: runMigrate})
}

func runMigrate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/pulse/verifier.hcl", "configuration file (names the store)")
	check := fs.Bool("check", false, "report the store's schema version and pending migrations; change nothing (exit 10 when migrations are pending)")
	apply := fs.Bool("apply", false, "apply pending migrations (take a backup first: pulsectl store backup)")
	asJSON := fs.Bool("json", false, "print JSON")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *check == *apply || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "pulse-verifier migrate: give exactly one of --check or --apply")
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "pulse-verifier migrate: invalid configuration:\n%v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	type report struct {
		Action string              `json:"action"`
		Before store.SchemaStatus  `json:"before"`
		After  *store.SchemaStatus `json:"after,omitempty"`
	}
	show := func(r report) {
		if *asJSON {
			b, _ := json.MarshalIndent(r, "", "  ")
			fmt.Fprintln(stdout, string(b))
			return
		}
		if r.After == nil {
			fmt.Fprintln(stdout, r.Before)
			return
		}
		if len(r.Before.Pending) == 0 {
			fmt.Fprintf(stdout, "%s: nothing to apply\n", r.After)
			return
		}
		fmt.Fprintf(stdout, "applied %d migration(s) (%s): schema version %d -> %d\n",
			len(r.Before.Pending), joinVersions(r.Before.Pending), r.Before.Current, r.After.Current)
	}
	if *check {
		st, err := store.CheckSchema(ctx, cfg.Store.Engine, cfg.Store.DSN)
		if err != nil {
			fmt.Fprintf(stderr, "pulse-verifier migrate: %v\n", err)
			return 1
		}
		show(report{Action: "check", Before: st})
		if err := st.Err(); err != nil {
			fmt.Fprintf(stderr, "pulse-verifier migrate: %v\n", err)
			return 1
		}
		if !st.UpToDate() {
			return exitPending
		}
		return 0
	}
	before, after, err := store.ApplyMigrations(ctx, cfg.Store.Engine, cfg.Store.DSN)
	if err != nil {
		if errors.Is(err, store.ErrSchemaNewer) {
			fmt.Fprintf(stderr, "pulse-verifier migrate: refusing: %v\n", err)
		} else {
			fmt.Fprintf(stderr, "pulse-verifier migrate: %v\n", err)
		}
		return 1
	}
	show(report{Action: "apply", Before: before, After: &after})
	return 0
}

func joinVersions(v []int) string {
	s := ""
	for i, n := range v {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprint(n)
	}
	return s
}
