package snakepit_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
)

// logLineWith returns the first log line holding every one of parts, "" if none.
func logLineWith(logs string, parts ...string) string {
	for _, line := range strings.Split(logs, "\n") {
		found := true
		for _, p := range parts {
			found = found && strings.Contains(line, p)
		}
		if found {
			return line
		}
	}
	return ""
}

// TestPartialStdoutLineDoesNotHangStart (issue 13): an adapter that leaves
// stdout in the middle of a line while it imports — print(..., end="") or
// a raw write to fd 1 without a newline — starts as any other: the
// handshake has a pipe of its own. Its tools work, and the partial text
// reaches the logs as stdout output.
func TestPartialStdoutLineDoesNotHangStart(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		for _, c := range []struct{ adapter, text string }{
			{"partial_stdout", "loading..."},
			{"raw_banner", "C-LIB BANNER v1.0"},
		} {
			t.Run(c.adapter, func(t *testing.T) {
				p := pool(t, "p", c.adapter, 1)
				p.StartTimeout = 15 * time.Second // before the fix, Start failed at this bound
				p.Restart.MaxRestarts = 1
				rt, logs := start(t, p)
				res, err := rt.Call(callCtx(t), "p", "echo", map[string]any{"value": "ok"})
				if err != nil {
					t.Fatal(err)
				}
				var got string
				if err := res.Decode(&got); err != nil || got != "ok" {
					t.Fatalf("echo: %q %v", got, err)
				}
				if err := rt.Stop(callCtx(t)); err != nil {
					t.Fatal(err)
				}
				if logLineWith(logs.String(), c.text, "stream=stdout") == "" {
					t.Fatalf("the partial stdout text %q is not in the logs:\n%s", c.text, logs.String())
				}
			})
		}
	})
}

// TestStartTimeoutSaysWhatTheWorkerWrote (issue 13): a worker whose adapter
// import never finishes fails Start, once its start timeout has passed,
// with a *StartTimeoutError that names what it wrote on stdout (a partial
// line too) and stderr, its pid, that it was still running, where its
// Python code was, and what to do; it still matches DeadlineExceeded.
func TestStartTimeoutSaysWhatTheWorkerWrote(t *testing.T) {
	t.Parallel() // mostly waits out start timeouts
	eachTransport(t, func(t *testing.T) {
		p := pool(t, "slow", "hang_import", 1)
		p.StartTimeout = 5 * time.Second
		p.Restart.MaxRestarts = 1 // the second attempt that times out fails the pool
		log, _ := testLogger(t)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		rt, err := snakepit.Start(ctx, snakepit.Config{Pools: []snakepit.PoolConfig{p}, Logger: log})
		if err == nil {
			_ = rt.Stop(ctx)
			t.Fatal("Start succeeded with an adapter whose import never ends")
		}
		var ste *snakepit.StartTimeoutError
		if !errors.As(err, &ste) {
			t.Fatalf("Start: %v (%T), want a *StartTimeoutError in the chain", err, err)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Start: %v does not match context.DeadlineExceeded", err)
		}
		checkStartTimeout(t, ste)
	})
}

func checkStartTimeout(t *testing.T, ste *snakepit.StartTimeoutError) {
	t.Helper()
	msg := ste.Error()
	if ste.Pid <= 0 || !ste.Running || ste.Waiting != "the handshake line" || ste.Waited <= 0 {
		t.Errorf("pid %d, running %v, waiting for %q, waited %s", ste.Pid, ste.Running, ste.Waiting, ste.Waited)
	}
	for what, want := range map[string][]string{
		"stdout": {ste.Stdout, "hang_import: loading the model", "progress: 10%  [partial line: no newline yet]"},
		"stderr": {ste.Stderr, "hang_import: waiting for the model server"},
		"stacks": {ste.Stacks, "wait_for_the_model_server"},
		"message": {msg, "PoolConfig.StartTimeout", "still running", "progress: 10%", "model server",
			"check what the adapter's module waits for at import"},
	} {
		for _, w := range want[1:] {
			if !strings.Contains(want[0], w) {
				t.Errorf("%s does not hold %q:\n%s", what, w, want[0])
			}
		}
	}
}
