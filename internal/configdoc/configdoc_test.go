package configdoc

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeTableIsCurrent fails when README.md's config table differs from
// what config.go's doc comments say: run `go generate` in the repo root.
func TestReadmeTableIsCurrent(t *testing.T) {
	table, err := Reference("../..")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want, err := Splice(string(readme), table)
	if err != nil {
		t.Fatal(err)
	}
	if want != string(readme) {
		t.Fatal("README.md's config table is out of date: run `go generate` in the repository root")
	}
	for _, field := range []string{"`Pools`", "`Adapter`", "`QueueSize`", "`Restart`", "**RestartPolicy**", "`MaxRestarts`", "**RecyclePolicy**", "`MaxRequests`"} {
		if !strings.Contains(table, field) {
			t.Errorf("table lacks %s", field)
		}
	}
}

func TestSplitDefault(t *testing.T) {
	cases := []struct{ doc, def, rest string }{
		{"Size is the number. Default: 1.", "1", "Size is the number."},
		{"CallTimeout bounds a call. Default 60s.", "60s", "CallTimeout bounds a call."},
		{"Name is required.", "—", "Name is required."},
		{"X. Default: $A, else b (on PATH). More.", "$A, else b (on PATH)", "X. More."},
	}
	for _, c := range cases {
		def, rest := splitDefault(c.doc)
		if def != c.def || rest != c.rest {
			t.Errorf("splitDefault(%q) = %q, %q; want %q, %q", c.doc, def, rest, c.def, c.rest)
		}
	}
}
