package pyworker

import (
	"os"
	"path/filepath"
	"testing"
)

func TestOOMWatchReadsTheCounter(t *testing.T) {
	dir := t.TempDir()
	events := filepath.Join(dir, "memory.events")
	write := func(n string) {
		if err := os.WriteFile(events, []byte("low 0\nhigh 0\nmax 3\noom 1\noom_kill "+n+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("2")
	n, err := oomKills(events)
	if err != nil || n != 2 {
		t.Fatalf("oomKills = %d, %v", n, err)
	}
	w := &oomWatch{events: events, before: n}
	if v := w.verdict(); !v.Known || v.Killed {
		t.Fatalf("unchanged counter: %+v", v)
	}
	write("3")
	if v := w.verdict(); !v.Known || !v.Killed {
		t.Fatalf("counter rose: %+v", v)
	}
	if v := (&oomWatch{why: "no cgroup"}).verdict(); v.Known || v.Killed || v.Detail != "no cgroup" {
		t.Fatalf("unknown: %+v", v)
	}
}

// TestOOMWatchOfThisProcess: on this machine the counter is either found
// (and then unchanged by a live process) or the reason is given.
func TestOOMWatchOfThisProcess(t *testing.T) {
	w := newOOMWatch(os.Getpid())
	v := w.verdict()
	if v.Detail == "" || v.Killed {
		t.Fatalf("%+v", v)
	}
	t.Logf("this machine: known=%v: %s", v.Known, v.Detail)
}
