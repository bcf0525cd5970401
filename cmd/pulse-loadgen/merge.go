package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/pulse-attest/pulse/internal/cli"
	"github.com/pulse-attest/pulse/loadgen"
)

func init() {
	commands.Register(cli.Command{Name: "merge", Summary: "merge the JSON summaries of one multi-process run (--summary OUT FILE...)", Run: runMerge})
	commands.Register(cli.Command{Name: "postgres", Summary: "start a throwaway PostgreSQL cluster, print its DSN, stop it on SIGINT/SIGTERM", Run: runPostgres})
}

func runMerge(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("merge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("summary", "", "write the merged JSON summary to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "pulse-loadgen merge: name the summaries to merge")
		return 2
	}
	var sums []*loadgen.Summary
	for _, path := range fs.Args() {
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(stderr, "pulse-loadgen merge: %v\n", err)
			return 1
		}
		var s loadgen.Summary
		if err := json.Unmarshal(b, &s); err != nil {
			fmt.Fprintf(stderr, "pulse-loadgen merge: %s: %v\n", path, err)
			return 1
		}
		sums = append(sums, &s)
	}
	m, err := loadgen.MergeSummaries(sums)
	if err != nil {
		fmt.Fprintf(stderr, "pulse-loadgen merge: %v\n", err)
		return 1
	}
	if *out != "" {
		js, err := json.MarshalIndent(m, "", "  ")
		if err == nil {
			err = os.WriteFile(*out, append(js, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "pulse-loadgen merge: %v\n", err)
			return 1
		}
	}
	loadgen.PrintSummary(stdout, m)
	if !m.Pass {
		return 1
	}
	return 0
}

func runPostgres(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("postgres", flag.ContinueOnError)
	fs.SetOutput(stderr)
	durable := fs.Bool("durable", false, "commits wait for WAL flushes (synchronous_commit=on)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	pg, err := loadgen.StartPostgres(*durable)
	if err != nil {
		fmt.Fprintf(stderr, "pulse-loadgen postgres: %v\n", err)
		return 1
	}
	defer pg.Stop()
	fmt.Fprintf(stdout, "dsn=%s\n", pg.DSN())
	if f, ok := stdout.(*os.File); ok {
		f.Sync() //nolint:errcheck // a pipe does not sync
	}
	<-sig
	return 0
}
