package snakepit_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
)

// A call queued behind a call whose connection breaks must not be handed to
// the worker being killed for it: it runs on the replacement. (The runner
// used to tell the pool the slot was free while it told the worker actor the
// connection had failed, so the pool sent the next call into the dying worker.)
func TestCallNotRoutedToAWorkerWithABrokenConnection(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "route", "route_tools", 1))
		old := callPid(t, rt, "route")
		marker := filepath.Join(t.TempDir(), "break")
		first := goCall(t, rt, "break_connection", map[string]any{"marker": marker})
		waitFor(t, "the breaking call to run", 10*time.Second, func() bool { return health(t, rt, "route").InFlight == 1 })
		second := goCall(t, rt, "pid", nil)
		waitFor(t, "the next call to queue", 10*time.Second, func() bool { return health(t, rt, "route").Queued == 1 })
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if r := <-first; r.err == nil {
			t.Fatalf("the call whose connection broke succeeded: %s", r.res.JSON())
		}
		r := <-second
		if r.err != nil {
			t.Fatalf("the queued call failed with the broken worker: %v", r.err)
		}
		if got := decodePid(t, r.res); got == old {
			t.Fatalf("the queued call ran on the worker whose connection broke (pid %d)", got)
		}
	})
}

// A call made once the runtime has decided to kill a frozen worker (it
// waits up to half a second for the worker's stacks first) must not be
// sent to that worker: it waits for the replacement.
func TestCallNotRoutedToAWorkerBeingKilled(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T) {
		p := pool(t, "route", "echo_tools", 1)
		p.Watchdog = snakepit.WatchdogPolicy{HealthInterval: 20 * time.Millisecond, HealthTimeout: 50 * time.Millisecond, HealthFailures: 1}
		rt, logs := start(t, p)
		old := callPid(t, rt, "route")
		if err := syscall.Kill(old, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the runtime to decide to kill the frozen worker", 10*time.Second, func() bool {
			return strings.Contains(logs.String(), "killing worker")
		})
		if got := callPid(t, rt, "route"); got == old {
			t.Fatalf("the call ran on the frozen worker (pid %d)", got)
		}
	})
}

// Recycle and RecycleAll return only once the old worker processes have
// exited (their graceful stop takes 0.3 s here, in an exit handler).
func TestRecycleReturnsAfterTheOldProcessExited(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T) {
		p := pool(t, "route", "route_tools", 2)
		p.Env = map[string]string{"ROUTE_TOOLS_SLOW_EXIT": "1"}
		rt, _ := start(t, p)
		before := health(t, rt, "route").Workers
		if err := rt.Recycle(callCtx(t), "route", before[0].ID); err != nil {
			t.Fatal(err)
		}
		assertGone(t, before[0].Pid, "Recycle")
		survivor := health(t, rt, "route").Workers
		if err := rt.RecycleAll(callCtx(t), "route"); err != nil {
			t.Fatal(err)
		}
		for _, w := range survivor {
			assertGone(t, w.Pid, "RecycleAll")
		}
	})
}

func assertGone(t *testing.T, pid int, after string) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("%s returned while the old worker process %d still existed (kill 0: %v)", after, pid, err)
	}
}

type callResult struct {
	res *snakepit.Result
	err error
}

// goCall makes a call on a goroutine; its result arrives on the channel.
func goCall(t *testing.T, rt *snakepit.Runtime, tool string, args any) <-chan callResult {
	out := make(chan callResult, 1)
	ctx := callCtx(t)
	go func() {
		res, err := rt.Call(ctx, "route", tool, args)
		out <- callResult{res, err}
	}()
	return out
}

func decodePid(t *testing.T, res *snakepit.Result) int {
	t.Helper()
	var pid int
	if err := res.Decode(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}
