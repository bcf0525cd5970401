package pulsev1_test

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// threatModel is the document holding the trust table, relative to this
// package's directory (go test runs in it).
const threatModel = "../../../docs/threat-model.md"

// trustSection is the heading of the table's section.
const trustSection = "## Trust source of every protocol field"

// agentRequests are the messages the agent sends: the request of every RPC
// of the Attestation service. Everything reachable from them is the agent's
// input to the verifier.
var agentRequests = []string{"EnrollRequest", "ActivateCredentialRequest", "ChallengeRequest", "DirectivesRequest", "PulseRequest"}

// serialised are bytes fields that carry a serialised message: the agent
// sends that message too (PulseRequest.payload is the signed PulsePayload).
var serialised = map[protoreflect.FullName]protoreflect.Name{
	"pulse.v1.PulseRequest.payload": "PulsePayload",
}

// noFields is the Field cell of the row of a message without fields.
const noFields = "—"

// trustSource is what the Trust source cell must start with: one or more of
// (a) quoted, (b) bound by a digest to quoted data, (c) operator or verifier
// state, or an explicit statement that the field decides nothing, is a
// report compared with evidence, or is a claim that decides (a known gap).
var trustSource = regexp.MustCompile(`^(\([abc]\)( \+ \([abc]\))*|informational — never decides|agent report, compared with quoted runtime log|claim — decides)`)

type row struct {
	line          int
	message, name string
	source        string
}

// parseTrustTable returns the rows of the trust table in doc: the Markdown
// table of the section titled trustSection.
func parseTrustTable(doc string) ([]row, error) {
	lines := strings.Split(doc, "\n")
	start := slices.Index(lines, trustSection)
	if start < 0 {
		return nil, fmt.Errorf("no section %q", trustSection)
	}
	var rows []row
	header := true
	for i := start + 1; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if strings.HasPrefix(l, "## ") {
			break
		}
		if !strings.HasPrefix(l, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), "|")
		for j := range cells {
			cells[j] = strings.Trim(strings.TrimSpace(cells[j]), "`")
		}
		if header {
			// The header row and its delimiter row.
			if strings.HasPrefix(cells[0], "---") {
				header = false
			}
			continue
		}
		if len(cells) != 4 {
			return nil, fmt.Errorf("line %d: %d cells, want 4 (message, field, trust source, use)", i+1, len(cells))
		}
		rows = append(rows, row{line: i + 1, message: cells[0], name: cells[1], source: cells[2]})
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("section %q holds no table rows", trustSection)
	}
	return rows, nil
}

// agentMessages returns the messages reachable from the named requests of
// file, by name, in the order first reached (through message fields and
// the bytes fields of serialised). Messages of google.protobuf
// (Timestamp, Duration) are values of the field holding them; a message of
// any other package is reported, since its fields would need rows too.
func agentMessages(file protoreflect.FileDescriptor, roots []string) ([]protoreflect.MessageDescriptor, error) {
	var out []protoreflect.MessageDescriptor
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor) error
	walk = func(md protoreflect.MessageDescriptor) error {
		if seen[md.FullName()] {
			return nil
		}
		seen[md.FullName()] = true
		switch {
		case md.ParentFile().Package() == "google.protobuf":
			return nil
		case md.ParentFile().Package() != file.Package():
			return fmt.Errorf("%s is reachable from an agent request but belongs to package %s", md.FullName(), md.ParentFile().Package())
		}
		out = append(out, md)
		fs := md.Fields()
		for i := 0; i < fs.Len(); i++ {
			f := fs.Get(i)
			if f.IsMap() {
				if err := walk(f.MapKey().Message()); err != nil {
					return err
				}
				f = f.MapValue()
			}
			if m := f.Message(); m != nil {
				if err := walk(m); err != nil {
					return err
				}
			}
			if name, ok := serialised[f.FullName()]; ok {
				m := file.Messages().ByName(name)
				if m == nil {
					return fmt.Errorf("%s carries %s, which %s does not declare", f.FullName(), name, file.Path())
				}
				if err := walk(m); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, name := range roots {
		md := file.Messages().ByName(protoreflect.Name(name))
		if md == nil {
			return nil, fmt.Errorf("%s declares no message %s", file.Path(), name)
		}
		if err := walk(md); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// localName is a message's name inside its package (Outer.Inner for a
// nested one).
func localName(md protoreflect.MessageDescriptor) string {
	return strings.TrimPrefix(string(md.FullName()), string(md.ParentFile().Package())+".")
}

// checkTrustTable returns one problem per field of msgs without a row, row
// naming no such field, duplicate row, and row without a trust source.
func checkTrustTable(rows []row, msgs []protoreflect.MessageDescriptor) []string {
	var problems []string
	byMsg := map[string]protoreflect.MessageDescriptor{}
	for _, md := range msgs {
		byMsg[localName(md)] = md
	}
	have := map[string]int{}
	for _, r := range rows {
		key := r.message + "." + r.name
		if prev, ok := have[key]; ok {
			problems = append(problems, fmt.Sprintf("line %d: second row for %s (first at line %d)", r.line, key, prev))
			continue
		}
		have[key] = r.line
		md, ok := byMsg[r.message]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("line %d: row for %s names no message the agent sends", r.line, key))
			continue
		case r.name == noFields && md.Fields().Len() > 0:
			problems = append(problems, fmt.Sprintf("line %d: row %q says %s has no fields, but it has %d", r.line, noFields, md.FullName(), md.Fields().Len()))
		case r.name != noFields && md.Fields().ByName(protoreflect.Name(r.name)) == nil:
			problems = append(problems, fmt.Sprintf("line %d: row for %s names a field that %s no longer has", r.line, key, md.FullName()))
		}
		if !trustSource.MatchString(r.source) {
			problems = append(problems, fmt.Sprintf("line %d: row for %s has trust source %q; want (a), (b), (c), \"informational — never decides\", \"agent report, compared with quoted runtime log\" or \"claim — decides ...\"", r.line, key, r.source))
		}
	}
	for _, md := range msgs {
		fs := md.Fields()
		if fs.Len() == 0 {
			if _, ok := have[localName(md)+"."+noFields]; !ok {
				problems = append(problems, fmt.Sprintf("message %s (no fields) has no row %q", md.FullName(), "| "+localName(md)+" | "+noFields+" | ..."))
			}
			continue
		}
		for i := 0; i < fs.Len(); i++ {
			f := fs.Get(i)
			if _, ok := have[localName(md)+"."+string(f.Name())]; !ok {
				problems = append(problems, fmt.Sprintf("field %s (number %d, %s) has no row in the trust table", f.FullName(), f.Number(), f.Kind()))
			}
		}
	}
	return problems
}

// TestTrustTableCoversEveryAgentField fails when a field of a message the
// agent sends has no row in the trust table of docs/threat-model.md, or a
// row names a field that no longer exists.
func TestTrustTableCoversEveryAgentField(t *testing.T) {
	doc, err := os.ReadFile(threatModel)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := parseTrustTable(string(doc))
	if err != nil {
		t.Fatalf("%s: %v", threatModel, err)
	}
	msgs, err := agentMessages(pulsev1.File_pulse_v1_pulse_proto, agentRequests)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range checkTrustTable(rows, msgs) {
		t.Errorf("%s, section %q: %s", threatModel, trustSection, p)
	}
}

// TestAgentRequestsAreTheServiceInputs keeps agentRequests equal to the
// request messages of the Attestation service's RPCs.
func TestAgentRequestsAreTheServiceInputs(t *testing.T) {
	svc := pulsev1.File_pulse_v1_pulse_proto.Services().ByName("Attestation")
	if svc == nil {
		t.Fatal("no service Attestation")
	}
	var inputs []string
	for i := 0; i < svc.Methods().Len(); i++ {
		inputs = append(inputs, localName(svc.Methods().Get(i).Input()))
	}
	slices.Sort(inputs)
	want := slices.Sorted(slices.Values(agentRequests))
	if !slices.Equal(inputs, want) {
		t.Fatalf("RPC requests %v, agentRequests %v", inputs, want)
	}
}

// TestCheckTrustTable shows each kind of problem the check reports, on a
// table over the real descriptors of two small messages.
func TestCheckTrustTable(t *testing.T) {
	file := pulsev1.File_pulse_v1_pulse_proto
	msgs := []protoreflect.MessageDescriptor{
		file.Messages().ByName("PCRValue"),
		file.Messages().ByName("ChallengeRequest"),
	}
	const head = trustSection + "\n\n| Message | Field | Trust source | Use |\n|---|---|---|---|\n"
	const full = "| `PCRValue` | `index` | (b) | x |\n| `PCRValue` | `digest` | (b) | x |\n| `ChallengeRequest` | — | (c) | x |\n"
	tests := []struct {
		name  string
		table string
		want  []string
	}{
		{"complete", full, nil},
		{"complete, next section ignored", full + "\n## Other\n\n| `Nope` | `x` | y | z |\n", nil},
		{"missing field", "| `PCRValue` | `index` | (b) | x |\n| `ChallengeRequest` | — | (c) | x |\n",
			[]string{"field pulse.v1.PCRValue.digest (number 2, bytes) has no row in the trust table"}},
		{"missing empty message", "| `PCRValue` | `index` | (b) | x |\n| `PCRValue` | `digest` | (b) | x |\n",
			[]string{"message pulse.v1.ChallengeRequest (no fields) has no row \"| ChallengeRequest | — | ...\""}},
		{"stale field", full + "| `PCRValue` | `bank` | (a) | x |\n",
			[]string{"line 8: row for PCRValue.bank names a field that pulse.v1.PCRValue no longer has"}},
		{"unknown message", full + "| `PulseResponse` | `verdict` | (c) | x |\n",
			[]string{"line 8: row for PulseResponse.verdict names no message the agent sends"}},
		{"duplicate", full + "| `PCRValue` | `index` | (a) | y |\n",
			[]string{"line 8: second row for PCRValue.index (first at line 5)"}},
		{"no trust source", "| `PCRValue` | `index` | trusted | x |\n| `PCRValue` | `digest` | (b) | x |\n| `ChallengeRequest` | — | (c) | x |\n",
			[]string{`line 5: row for PCRValue.index has trust source "trusted"; want (a), (b), (c), "informational — never decides", "agent report, compared with quoted runtime log" or "claim — decides ..."`}},
		{"no-fields row on a message with fields", full + "| `PCRValue` | — | (b) | x |\n",
			[]string{`line 8: row "—" says pulse.v1.PCRValue has no fields, but it has 2`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := parseTrustTable(head + tc.table)
			if err != nil {
				t.Fatal(err)
			}
			if got := checkTrustTable(rows, msgs); !slices.Equal(got, tc.want) {
				t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestParseTrustTableErrors covers documents the table cannot be read from.
func TestParseTrustTableErrors(t *testing.T) {
	tests := []struct {
		name, doc string
	}{
		{"no section", "# Threat model\n"},
		{"no rows", trustSection + "\n\n| Message | Field | Trust source | Use |\n|---|---|---|---|\n"},
		{"short row", trustSection + "\n\n| Message | Field | Trust source | Use |\n|---|---|---|---|\n| `PCRValue` | `index` | (b) |\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if rows, err := parseTrustTable(tc.doc); err == nil {
				t.Fatalf("parsed %d rows, want an error", len(rows))
			}
		})
	}
}
