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

// TestTelemetryCatalogueIsCurrent fails when docs/telemetry.md's catalogue
// differs from the events telemetry/events.go defines.
func TestTelemetryCatalogueIsCurrent(t *testing.T) {
	events, err := Events("../../telemetry/events.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/telemetry.md")
	if err != nil {
		t.Fatal(err)
	}
	want, err := SpliceBetween(string(doc), EventsBegin, EventsEnd, Catalogue(events))
	if err != nil {
		t.Fatal(err)
	}
	if want != string(doc) {
		t.Fatal("docs/telemetry.md's event catalogue is out of date: run `go generate` in the repository root")
	}
	if len(events) < 12 {
		t.Fatalf("found %d events", len(events))
	}
	for _, e := range events {
		for _, f := range e.Fields {
			if f.Doc == "" {
				t.Errorf("%s.%s has no comment: the catalogue would not say what it means", e.Type, f.Name)
			}
		}
	}
}

func TestEventsRejectsAStructWithoutEventName(t *testing.T) {
	path := t.TempDir() + "/ev.go"
	src := "package x\n\ntype A struct{ N int }\n\nfunc (A) EventName() string { return \"a\" }\n\ntype B struct{}\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Events(path); err == nil || !strings.Contains(err.Error(), "struct B in") {
		t.Fatalf("got %v", err)
	}
}

// TestMetricsTableIsCurrent fails when docs/telemetry.md's metrics table
// differs from what telemetry.Metrics serves.
func TestMetricsTableIsCurrent(t *testing.T) {
	table, err := MetricsTable()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/telemetry.md")
	if err != nil {
		t.Fatal(err)
	}
	want, err := SpliceBetween(string(doc), MetricsBegin, MetricsEnd, table)
	if err != nil {
		t.Fatal(err)
	}
	if want != string(doc) {
		t.Fatal("docs/telemetry.md's metrics table is out of date: run `go generate` in the repository root")
	}
	for _, m := range []string{"snakepit_requests_total", "snakepit_request_duration_seconds", "snakepit_queue_depth",
		"snakepit_worker_recycles_total", "snakepit_worker_rss_bytes"} {
		if !strings.Contains(table, "`"+m+"`") {
			t.Errorf("metrics table lacks %s", m)
		}
	}
}
