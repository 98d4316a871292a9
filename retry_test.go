package snakepit_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snakepit-go/snakepit"
)

func attempts(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// TestIdempotentCallsAreRetriedOthersNever: a call marked Idempotent whose
// worker dies under it runs again and succeeds; retries are bounded; an
// unmarked call is never sent twice.
func TestIdempotentCallsAreRetriedOthersNever(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "chaos_tools", 2))
		dir := t.TempDir()

		once := filepath.Join(dir, "once")
		res, err := rt.Call(callCtx(t), "p", "crash_until", map[string]any{"path": once, "crashes": 1}, snakepit.Idempotent(2))
		if err != nil {
			t.Fatalf("idempotent call after one crash: %v", err)
		}
		var n int
		if err := res.Decode(&n); err != nil || n != 2 {
			t.Fatalf("succeeded on attempt %d (%v), want 2", n, err)
		}

		always := filepath.Join(dir, "always")
		_, err = rt.Call(callCtx(t), "p", "crash_until", map[string]any{"path": always, "crashes": 100}, snakepit.Idempotent(2))
		if !errors.Is(err, snakepit.ErrWorkerCrashed) {
			t.Fatalf("a call that always crashes: %v, want ErrWorkerCrashed", err)
		}
		if got := attempts(t, always); got != 3 {
			t.Fatalf("Idempotent(2) ran %d times, want 3", got)
		}

		plain := filepath.Join(dir, "plain")
		_, err = rt.Call(callCtx(t), "p", "crash_until", map[string]any{"path": plain, "crashes": 1})
		var crashed *snakepit.WorkerCrashedError
		if !errors.As(err, &crashed) || crashed.Exit.Code != 3 {
			t.Fatalf("a plain call whose worker died: %v, want *WorkerCrashedError exit 3", err)
		}
		if got := attempts(t, plain); got != 1 {
			t.Fatalf("a call not marked idempotent ran %d times", got)
		}
	})
}
