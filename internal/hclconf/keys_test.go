package hclconf

import (
	"reflect"
	"testing"
)

func TestKeys(t *testing.T) {
	type hook struct {
		Name string `hcl:"name,label"`
		URL  string `hcl:"url"`
	}
	type inner struct {
		A     string `hcl:"a,optional"`
		Hooks []hook `hcl:"webhook,block"`
	}
	type top struct {
		Listen   string  `hcl:"listen,optional"`
		Skipped  string  // no tag: not a key
		Inner    *inner  `hcl:"alerts,block"`
		Flat     []int   `hcl:"numbers"`
		Attr     *string `hcl:"attr,attr"`
		Leftover any     `hcl:",remain"`
	}
	got := Keys(reflect.TypeOf(&top{}))
	want := []Key{
		{Path: "listen"},
		{Path: "alerts", Block: true},
		{Path: "alerts.a"},
		{Path: "alerts.webhook", Block: true, Label: "name"},
		{Path: "alerts.webhook.url"},
		{Path: "numbers"},
		{Path: "attr"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Keys =\n%+v\nwant\n%+v", got, want)
	}
}

func TestReferenceKeys(t *testing.T) {
	doc := "# Title\n\n## a\n\n| key | meaning |\n|---|---|\n| `x` | one |\n| `y.z` | two |\nprose `w`\n\n## b\n\n| `q` | other section |\n"
	if got := ReferenceKeys(doc, "a"); !reflect.DeepEqual(got, []string{"x", "y.z"}) {
		t.Fatalf("section a: %v", got)
	}
	if got := ReferenceKeys(doc, "b"); !reflect.DeepEqual(got, []string{"q"}) {
		t.Fatalf("section b: %v", got)
	}
	if got := ReferenceKeys(doc, "missing"); got != nil {
		t.Fatalf("missing section: %v", got)
	}
}

func TestMentions(t *testing.T) {
	ex := "listen = \"x\"\n# admin_listen = \"y\"\ntls {\n  # reload_interval = \"10s\"\n}\n# webhook \"siem\" {\n# listener_count is not listen\n"
	for _, tc := range []struct {
		k    Key
		want bool
	}{
		{Key{Path: "listen"}, true},
		{Key{Path: "admin_listen"}, true},
		{Key{Path: "tls", Block: true}, true},
		{Key{Path: "tls.reload_interval"}, true},
		{Key{Path: "alerts.webhook", Block: true, Label: "name"}, true},
		{Key{Path: "tls.cert"}, false},
		{Key{Path: "listener_count"}, false},
		{Key{Path: "listen", Block: true}, false},
	} {
		if got := Mentions(ex, tc.k); got != tc.want {
			t.Errorf("Mentions(%+v) = %v, want %v", tc.k, got, tc.want)
		}
	}
}
