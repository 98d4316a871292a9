package pyworker

import (
	"context"
	"os"
	"os/exec"
	"testing"
)

// TestInterpreterFacts: detection reads the build and the run-time GIL
// state, not the version number.
func TestInterpreterFacts(t *testing.T) {
	cases := []struct {
		path              string
		freeThreaded, gil bool
		skipWhy           string
	}{
		{path: "/usr/bin/python3", gil: true, skipWhy: "no /usr/bin/python3"},
		{path: os.Getenv("SNAKEPIT_TEST_PYTHON_FT"), freeThreaded: true, skipWhy: "SNAKEPIT_TEST_PYTHON_FT not set"},
	}
	for _, c := range cases {
		if _, err := exec.LookPath(c.path); c.path == "" || err != nil {
			t.Logf("skipping a case: %s", c.skipWhy)
			continue
		}
		in, err := FindInterpreter(context.Background(), c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if in.FreeThreaded != c.freeThreaded || in.GILEnabled != c.gil || in.Version == "" {
			t.Fatalf("%s: got %+v, want free-threaded %v, GIL enabled %v", c.path, in, c.freeThreaded, c.gil)
		}
	}
}
