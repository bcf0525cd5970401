package bpf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The testdata formats were copied from /sys/kernel/tracing/events on a 6.18 kernel.
func TestParseTracepointFormat(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "signal_generate.format"))
	if err != nil {
		t.Fatal(err)
	}
	fields, err := parseTracepointFormat(data)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]tpField{
		"common_type": {0, 2}, "common_pid": {4, 4},
		"sig": {8, 4}, "errno": {12, 4}, "comm": {20, 16}, "pid": {36, 4}, "result": {44, 4},
	}
	for name, w := range want {
		if fields[name] != w {
			t.Errorf("%s = %+v, want %+v", name, fields[name], w)
		}
	}
}

func TestCheckTracepointLayout(t *testing.T) {
	dir := t.TempDir()
	for _, tp := range []struct{ group, name string }{{"signal", "signal_generate"}, {"task", "task_newtask"}, {"syscalls", "sys_enter_bpf"}} {
		data, err := os.ReadFile(filepath.Join("testdata", tp.name+".format"))
		if err != nil {
			t.Fatal(err)
		}
		d := filepath.Join(dir, "events", tp.group, tp.name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "format"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := checkTracepointLayout(dir, "signal", "signal_generate", map[string]tpField{"pid": {36, 4}}); err != nil {
		t.Errorf("matching layout rejected: %v", err)
	}
	err := checkTracepointLayout(dir, "signal", "signal_generate", map[string]tpField{"pid": {40, 4}})
	if err == nil || !strings.Contains(err.Error(), "offset 36") {
		t.Errorf("moved field accepted or badly reported: %v", err)
	}
	if err := checkTracepointLayout(dir, "signal", "signal_generate", map[string]tpField{"nosuch": {8, 4}}); err == nil {
		t.Error("missing field accepted")
	}
	if err := checkTracepointLayout(dir, "signal", "nosuch", nil); err == nil {
		t.Error("missing tracepoint accepted")
	}
}

func TestParseTracepointFormatMalformed(t *testing.T) {
	for name, in := range map[string]string{
		"empty":      "",
		"no fields":  "name: x\nID: 1\nformat:\n",
		"bad offset": "\tfield:int sig;\toffset:x;\tsize:4;\tsigned:1;\n",
		"no size":    "\tfield:int sig;\toffset:8;\n",
		"no name":    "\tfield:;\toffset:8;\tsize:4;\n",
		"negative":   "\tfield:int sig;\toffset:-8;\tsize:4;\n",
	} {
		if _, err := parseTracepointFormat([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{
		"char comm[16]": "comm", "int sig": "sig", "const char * name": "name",
		"unsigned long long *ptr": "ptr", "__data_loc char[] msg": "msg",
	} {
		if got := fieldName(in); got != want {
			t.Errorf("fieldName(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseTracepointFormat(f *testing.F) {
	for _, n := range []string{"signal_generate", "task_newtask", "sys_enter_bpf"} {
		if data, err := os.ReadFile(filepath.Join("testdata", n+".format")); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("\tfield:int x;\toffset:1;\tsize:2;"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fields, err := parseTracepointFormat(data)
		if err != nil {
			return
		}
		for name, fl := range fields {
			if name == "" || fl.Offset < 0 || fl.Size < 0 {
				t.Fatalf("bad field %q %+v", name, fl)
			}
		}
	})
}
