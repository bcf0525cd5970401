package hclconf

import (
	"reflect"
	"strings"
)

// Key is one key a configuration file may set, as its dotted path from the
// top ("tls.cert", "alerts.webhook.url"). Block is true for a block
// ("tls", "alerts.webhook"); Label names a block's label ("name") when it
// takes one.
type Key struct {
	Path  string
	Block bool
	Label string
}

// Keys lists every key that decoding into a value of type t (a struct with
// gohcl `hcl:"name,kind"` tags, or a pointer to one) accepts, in field
// order, blocks before their contents. The configuration reference and the
// example files are checked against it, so no key goes undocumented.
func Keys(t reflect.Type) []Key {
	var out []Key
	walkKeys(t, "", &out)
	return out
}

func walkKeys(t reflect.Type, prefix string, out *[]Key) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("hcl")
		if !ok {
			continue
		}
		name, kind, _ := strings.Cut(tag, ",")
		switch kind {
		case "label", "remain":
			continue
		case "block":
			k := Key{Path: prefix + name, Block: true}
			et := f.Type
			for et.Kind() == reflect.Pointer || et.Kind() == reflect.Slice {
				et = et.Elem()
			}
			for j := range et.NumField() {
				if l, ok := et.Field(j).Tag.Lookup("hcl"); ok {
					if ln, lk, _ := strings.Cut(l, ","); lk == "label" {
						k.Label = ln
					}
				}
			}
			*out = append(*out, k)
			walkKeys(f.Type, prefix+name+".", out)
		default:
			*out = append(*out, Key{Path: prefix + name})
		}
	}
}

// ReferenceKeys returns the keys a Markdown reference documents in the
// section under heading (a "## heading" line, up to the next "## "): the
// first cell of every table row that starts with a backquoted key.
func ReferenceKeys(doc, heading string) []string {
	var keys []string
	in := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "## ") {
			in = strings.TrimSpace(strings.TrimPrefix(line, "## ")) == heading
			continue
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cell, _, _ := strings.Cut(strings.TrimPrefix(line, "| `"), "`")
		keys = append(keys, cell)
	}
	return keys
}

// Mentions reports whether an example configuration sets or shows (in a
// comment) the key's last path element: `name =`, `name {` or
// `name "label" {` at the start of a line, after an optional "#".
func Mentions(example string, k Key) bool {
	name := k.Path[strings.LastIndex(k.Path, ".")+1:]
	for _, line := range strings.Split(example, "\n") {
		line = strings.TrimSpace(line)
		line = strings.TrimSpace(strings.TrimPrefix(line, "#"))
		rest, ok := strings.CutPrefix(line, name)
		if !ok {
			continue
		}
		rest = strings.TrimSpace(rest)
		if k.Block && (strings.HasPrefix(rest, "{") || strings.HasPrefix(rest, `"`)) {
			return true
		}
		if !k.Block && strings.HasPrefix(rest, "=") {
			return true
		}
	}
	return false
}
