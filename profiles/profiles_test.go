package profiles

import (
	"strings"
	"testing"
)

func TestLookup(t *testing.T) {
	for _, name := range []string{"", "process"} {
		p, err := Lookup(name)
		if err != nil || p.Name() != "process" || p.Shape(Settings{ThreadsPerWorker: 8}).Capacity != 1 {
			t.Fatalf("Lookup(%q) = %v, %v", name, p, err)
		}
	}
	if _, err := Lookup("fibers"); err == nil || !strings.Contains(err.Error(), "known: process") {
		t.Fatalf("unknown profile error = %v", err)
	}
}
