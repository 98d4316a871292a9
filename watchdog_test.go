package snakepit_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
)

func callPid(t *testing.T, rt *snakepit.Runtime, pool string) int {
	t.Helper()
	res, err := rt.Call(callCtx(t), pool, "pid", nil)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := res.Decode(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestStuckCallKillsItsWorkerAfterTheGrace: a tool that never returns fails
// its call at the caller's deadline; its worker keeps the capacity until
// HangGrace has passed, then is killed and replaced, and the call queued
// behind it is served by the replacement.
func TestStuckCallKillsItsWorkerAfterTheGrace(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		p := pool(t, "p", "echo_tools", 1)
		p.Watchdog = snakepit.WatchdogPolicy{HangGrace: 300 * time.Millisecond}
		rt, logs := start(t, p)
		before := callPid(t, rt, "p")
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		t0 := time.Now()
		_, err := rt.Call(ctx, "p", "sleep", map[string]any{"seconds": 60})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("stuck call: %v, want DeadlineExceeded", err)
		}
		if waited := time.Since(t0); waited > 5*time.Second {
			t.Fatalf("the caller waited %s past a 200ms deadline", waited)
		}
		if h := health(t, rt, "p"); h.Workers[0].Load != 1 {
			t.Fatalf("the stuck call gave its capacity back while Python still runs it: %+v", h.Workers[0])
		}
		after := callPid(t, rt, "p") // queued until the replacement is ready
		if after == before {
			t.Fatal("the stuck worker was not replaced")
		}
		if !strings.Contains(logs.String(), "still running") || !strings.Contains(logs.String(), "HangGrace") {
			t.Fatalf("the kill does not say why:\n%s", logs.String())
		}
		if h := health(t, rt, "p"); h.Failed || h.Workers[0].Restarts != 1 {
			t.Fatalf("after the hang: %+v", h)
		}
	})
}

// TestAbandonedCallThatEndsKeepsItsWorker: a call whose caller gave up but
// whose tool ends within HangGrace frees its capacity when Python is done,
// and the worker lives on.
func TestAbandonedCallThatEndsKeepsItsWorker(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		p := pool(t, "p", "echo_tools", 1)
		p.Watchdog = snakepit.WatchdogPolicy{HangGrace: 20 * time.Second}
		rt, _ := start(t, p)
		before := callPid(t, rt, "p")
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if _, err := rt.Call(ctx, "p", "sleep", map[string]any{"seconds": 0.6}); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want DeadlineExceeded", err)
		}
		if after := callPid(t, rt, "p"); after != before {
			t.Fatalf("worker replaced (%d → %d) though its call ended within the grace", before, after)
		}
		if h := health(t, rt, "p"); h.Workers[0].Load != 0 || h.Workers[0].Restarts != 0 {
			t.Fatalf("after the abandoned call ended: %+v", h.Workers[0])
		}
	})
}

// TestFrozenWorkerIsReplaced: a worker stopped with SIGSTOP fails its
// health checks and is killed and replaced.
func TestFrozenWorkerIsReplaced(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		p := pool(t, "p", "echo_tools", 1)
		p.Watchdog = snakepit.WatchdogPolicy{HealthInterval: 50 * time.Millisecond, HealthTimeout: 100 * time.Millisecond, HealthFailures: 2}
		rt, logs := start(t, p)
		frozen := callPid(t, rt, "p")
		if err := syscall.Kill(frozen, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the frozen worker to be replaced", 30*time.Second, func() bool {
			w := health(t, rt, "p").Workers[0]
			return w.Ready && w.Pid != frozen
		})
		if got := callPid(t, rt, "p"); got == frozen {
			t.Fatal("served by the frozen worker")
		}
		if !strings.Contains(logs.String(), "health checks in a row") {
			t.Fatalf("the kill does not say why:\n%s", logs.String())
		}
	})
}
