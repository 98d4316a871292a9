package main

import "testing"

func TestParseColumn(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want column
		ok   bool
	}{
		{"process:16x1", column{"process", 16, 1}, true},
		{"thread:1x16", column{"thread", 1, 16}, true},
		{"thread:2x8", column{"thread", 2, 8}, true},
		{"process:2x8", column{}, false},
		{"auto:1x4", column{}, false},
		{"thread:0x4", column{}, false},
		{"thread:4", column{}, false},
		{"1x16", column{}, false},
	} {
		got, err := parseColumn(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseColumn(%q) = %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	c := column{"thread", 2, 8}
	if c.name() != "thread 2×8" || c.pool() != "thread-2x8" {
		t.Errorf("column names: %q, %q", c.name(), c.pool())
	}
	if p := c.config("py", "dir"); p.Profile != "thread" || p.Size != 2 || p.ThreadsPerWorker != 8 || p.Transport != "native" {
		t.Errorf("config: %+v", p)
	}
}

func TestSpinMatchesTheAdapterLoop(t *testing.T) {
	// Values from the Python loop: acc = (acc + i * i) % m over range(n).
	if got := spin(10, 251); got != 285%251 {
		t.Errorf("spin(10, 251) = %d, want %d", got, 285%251)
	}
	if got := spin(1000, 251); got != 221 {
		t.Errorf("spin(1000, 251) = %d, want 221", got)
	}
	if got := spin(10, 1000003); got != 285 {
		t.Errorf("spin(10, 1000003) = %d, want 285", got)
	}
}
