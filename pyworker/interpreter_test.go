package pyworker

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
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

// TestShimResolvesToTheInterpreter: a version manager's shim (a script that
// execs Python) is replaced by the interpreter it runs, so workers start
// without it.
func TestShimResolvesToTheInterpreter(t *testing.T) {
	real, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		t.Skip("no /usr/bin/python3")
	}
	shim := filepath.Join(t.TempDir(), "python3")
	if err := os.WriteFile(shim, []byte("#!/bin/sh\nexec "+real+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := FindInterpreter(context.Background(), shim, nil)
	if err != nil {
		t.Fatal(err)
	}
	if in.Path == shim || !filepath.IsAbs(in.Path) {
		t.Fatalf("Path = %q: want the interpreter the shim runs, not the shim", in.Path)
	}
	if got := realExecutable(shim, "relative/python"); got != shim {
		t.Fatalf("a relative sys.executable must not be trusted: got %q", got)
	}
	if got := realExecutable(shim, ""); got != shim {
		t.Fatalf("an empty sys.executable must keep the found path: got %q", got)
	}
}

// TestReadLinesClosesItsPipe: the reader owns the pipe's read end and
// closes it at EOF instead of leaving it to the garbage collector.
func TestReadLinesClosesItsPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte("one\ntwo\n"))
	_ = w.Close()
	var lines []string
	readLines(r, func(l string) { lines = append(lines, l) })
	if len(lines) != 2 {
		t.Fatalf("lines = %q", lines)
	}
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read end still open after EOF: Read returned %v", err)
	}
}
