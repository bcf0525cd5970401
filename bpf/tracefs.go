package bpf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// tpField is one field of a tracepoint record as the format file describes it.
type tpField struct {
	Offset, Size int
}

// parseTracepointFormat reads the fields of a tracefs events/<group>/<name>/format
// file: lines such as "\tfield:char comm[16];\toffset:20;\tsize:16;\tsigned:0;".
func parseTracepointFormat(data []byte) (map[string]tpField, error) {
	fields := map[string]tpField{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "field:") {
			continue
		}
		var decl string
		f := tpField{Offset: -1, Size: -1}
		for _, part := range strings.Split(line, ";") {
			part = strings.TrimSpace(part)
			key, val, ok := strings.Cut(part, ":")
			if !ok {
				continue
			}
			switch key {
			case "field":
				decl = val
			case "offset", "size":
				n, err := strconv.Atoi(val)
				if err != nil || n < 0 {
					return nil, fmt.Errorf("tracepoint format: bad %s in %q", key, line)
				}
				if key == "offset" {
					f.Offset = n
				} else {
					f.Size = n
				}
			}
		}
		name := fieldName(decl)
		if name == "" || f.Offset < 0 || f.Size < 0 {
			return nil, fmt.Errorf("tracepoint format: malformed field line %q", line)
		}
		fields[name] = f
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tracepoint format: %w", err)
	}
	if len(fields) == 0 {
		return nil, errors.New("tracepoint format: no fields")
	}
	return fields, nil
}

// fieldName extracts the identifier from a C declaration such as
// "char comm[16]" or "const char * name".
func fieldName(decl string) string {
	decl = strings.TrimSpace(decl)
	if strings.HasSuffix(decl, "]") {
		if i := strings.LastIndexByte(decl, '['); i >= 0 {
			decl = decl[:i]
		}
	}
	decl = strings.TrimRight(decl, " ")
	i := strings.LastIndexAny(decl, " *")
	return strings.TrimSpace(decl[i+1:])
}

// checkTracepointLayout verifies that the running kernel lays out the fields a
// program reads where the program's hand-written struct expects them.
func checkTracepointLayout(tracefs, group, name string, want map[string]tpField) error {
	path := filepath.Join(tracefs, "events", group, name, "format")
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read tracepoint format: %w", err)
	}
	have, err := parseTracepointFormat(data)
	if err != nil {
		return fmt.Errorf("%s/%s: %w", group, name, err)
	}
	for field, w := range want {
		h, ok := have[field]
		if !ok {
			return fmt.Errorf("tracepoint %s/%s has no field %q", group, name, field)
		}
		if h != w {
			return fmt.Errorf("tracepoint %s/%s field %q at offset %d size %d, program expects offset %d size %d",
				group, name, field, h.Offset, h.Size, w.Offset, w.Size)
		}
	}
	return nil
}
