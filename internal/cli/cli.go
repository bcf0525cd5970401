// Package cli holds the tiny subcommand registry shared by Pulse's mains, so
// each subcommand lives in its own file and main.go stays a dispatcher.
package cli

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Command is one subcommand. Run receives the arguments after the
// subcommand's name and returns the process exit code.
type Command struct {
	Name    string
	Summary string
	Run     func(args []string, stdout, stderr io.Writer) int
	// Hidden leaves the command out of the usage text ("--version").
	Hidden bool
}

// Registry maps names to subcommands. Names may contain spaces
// ("eventlog replay"): the longest registered prefix of the arguments wins.
type Registry struct {
	Program  string
	commands map[string]Command
}

// NewRegistry returns an empty registry for the named program.
func NewRegistry(program string) *Registry {
	return &Registry{Program: program, commands: map[string]Command{}}
}

// Register adds a subcommand; registering a name twice panics (a programming error).
func (r *Registry) Register(c Command) {
	if _, dup := r.commands[c.Name]; dup {
		panic("cli: duplicate command " + c.Name)
	}
	r.commands[c.Name] = c
}

// RegisterVersion adds "version" and "--version", both printing line(program)
// and exiting 0.
func (r *Registry) RegisterVersion(line func(program string) string) {
	run := func(args []string, stdout, stderr io.Writer) int {
		if len(args) > 0 {
			fmt.Fprintf(stderr, "%s: version takes no arguments\n", r.Program)
			return 2
		}
		fmt.Fprintln(stdout, line(r.Program))
		return 0
	}
	r.Register(Command{Name: "version", Summary: "print the version, revision, build date and Go version", Run: run})
	r.Register(Command{Name: "--version", Run: run, Hidden: true})
}

// Main dispatches os.Args-style arguments (without the program name) and
// returns the exit code.
func (r *Registry) Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		r.usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for n := len(args); n > 0; n-- {
		name := strings.Join(args[:n], " ")
		if c, ok := r.commands[name]; ok {
			return c.Run(args[n:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "%s: unknown command %q\n\n", r.Program, strings.Join(args, " "))
	r.usage(stderr)
	return 2
}

func (r *Registry) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\ncommands:\n", r.Program)
	names := make([]string, 0, len(r.commands))
	for n, c := range r.commands {
		if c.Hidden {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-28s %s\n", n, r.commands[n].Summary)
	}
}

// Exit runs the registry against os.Args and exits with its code.
func (r *Registry) Exit() {
	os.Exit(r.Main(os.Args[1:], os.Stdout, os.Stderr))
}
