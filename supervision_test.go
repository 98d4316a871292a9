package snakepit_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
)

func killWorker(t *testing.T, rt *snakepit.Runtime, pool string, i int) int {
	t.Helper()
	var pid int
	waitFor(t, "the worker to be ready", 20*time.Second, func() bool {
		w := health(t, rt, pool).Workers[i]
		pid = w.Pid
		return w.Ready
	})
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestRestartIntensityExceededFailsThePool(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		p := pool(t, "p", "echo_tools", 1)
		p.Restart = snakepit.RestartPolicy{MaxRestarts: 2, Period: time.Hour, InitialBackoff: time.Millisecond}
		rt, _ := start(t, p, pool(t, "other", "echo_tools", 1))
		for i := 0; i < 2; i++ { // two crashes are within the intensity: restarted
			old := killWorker(t, rt, "p", 0)
			waitFor(t, "a restart", 20*time.Second, func() bool {
				w := health(t, rt, "p").Workers[0]
				return w.Ready && w.Pid != old
			})
		}
		killWorker(t, rt, "p", 0) // the third is not
		waitFor(t, "the pool to fail", 20*time.Second, func() bool { return health(t, rt, "p").Failed })
		h := health(t, rt, "p")
		if !strings.Contains(h.Reason, "restart intensity exceeded") {
			t.Fatalf("failed pool reason = %q", h.Reason)
		}
		if _, err := rt.Call(callCtx(t), "p", "echo", nil); !errors.Is(err, snakepit.ErrPoolUnavailable) {
			t.Fatalf("call to a failed pool: got %v, want ErrPoolUnavailable", err)
		}
		if _, err := rt.Call(callCtx(t), "other", "echo", nil); err != nil {
			t.Fatalf("a failed pool took another pool down: %v", err)
		}
	})
}

func TestNoPythonListsWhatWasTried(t *testing.T) {
	good, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		t.Skip("no /usr/bin/python3 to build an interpreter without packages from")
	}
	// An interpreter that runs but cannot see site-packages: no grpc.
	bare := filepath.Join(t.TempDir(), "bare-python")
	if err := os.WriteFile(bare, []byte("#!/bin/sh\nexec "+good+" -S \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ python, want string }{
		{"/nonexistent/python3", "/nonexistent/python3: not found"},
		{bare, "cannot import grpc"},
	} {
		log, _ := testLogger(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		p := pool(t, "p", "echo_tools", 1)
		p.Transport = "grpc" // the bare interpreter can run the native transport
		_, err := snakepit.Start(ctx, snakepit.Config{Logger: log, Python: c.python, Pools: []snakepit.PoolConfig{p}})
		cancel()
		var np *snakepit.NoPythonError
		if !errors.Is(err, snakepit.ErrNoPython) || !errors.As(err, &np) {
			t.Fatalf("Python %s: got %v, want ErrNoPython", c.python, err)
		}
		if msg := err.Error(); !strings.Contains(msg, c.want) || !strings.Contains(msg, "SNAKEPIT_PYTHON") {
			t.Fatalf("Python %s: error does not say what failed and how to fix it:\n%s", c.python, msg)
		}
	}
}

func TestRuntimeDirectoryIsPrivate(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		dir := t.TempDir()
		log, _ := testLogger(t)
		ctx := callCtx(t)
		rt, err := snakepit.Start(ctx, snakepit.Config{Logger: log, RuntimeDir: dir,
			Pools: []snakepit.PoolConfig{pool(t, "p", "echo_tools", 1)}})
		if err != nil {
			t.Fatal(err)
		}
		runDirs, _ := filepath.Glob(filepath.Join(dir, "snakepit-*"))
		if len(runDirs) != 1 {
			t.Fatalf("runtime directories: %v", runDirs)
		}
		st, err := os.Stat(runDirs[0])
		if err != nil || st.Mode().Perm() != 0o700 {
			t.Fatalf("runtime directory mode = %v (%v), want 0700", st.Mode().Perm(), err)
		}
		socks, _ := filepath.Glob(filepath.Join(runDirs[0], "*.sock"))
		for _, s := range socks {
			if st, err := os.Stat(s); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("socket %s mode = %v, want 0600", s, st.Mode().Perm())
			}
		}
		if len(socks) != 1 {
			t.Fatalf("sockets: %v", socks)
		}
		if err := rt.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(runDirs[0]); !os.IsNotExist(err) {
			t.Fatalf("runtime directory left after Stop: %v", err)
		}
	})
}

// TestNoCallLostWhileWorkersDie kills workers under concurrent load: every
// call must end with a result or ErrWorkerCrashed, none with anything else,
// none hanging.
func TestNoCallLostWhileWorkersDie(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		const callers, maxPerCaller, kills = 8, 2000, 5
		p := pool(t, "p", "echo_tools", 3)
		p.Restart.MaxRestarts = 100
		rt, _ := start(t, p)
		var issued, ok, crashed, other atomic.Int64
		var wg sync.WaitGroup
		killing := make(chan struct{})
		for c := 0; c < callers; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < maxPerCaller; i++ { // load lasts until the kills are done
					select {
					case <-killing:
						return
					default:
					}
					issued.Add(1)
					_, err := rt.Call(callCtx(t), "p", "sleep", map[string]any{"seconds": 0.005})
					switch {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, snakepit.ErrWorkerCrashed):
						crashed.Add(1)
					default:
						other.Add(1)
						t.Errorf("call ended with an unexpected error: %v", err)
					}
				}
			}()
		}
		for k := 0; k < kills; k++ {
			old := killWorker(t, rt, "p", k%3)
			waitFor(t, "the killed worker to be replaced", 20*time.Second, func() bool {
				w := health(t, rt, "p").Workers[k%3]
				return w.Ready && w.Pid != old
			})
		}
		close(killing)
		wg.Wait()
		if ended := ok.Load() + crashed.Load() + other.Load(); ended != issued.Load() {
			t.Fatalf("%d calls ended, %d issued", ended, issued.Load())
		}
		t.Logf("%d ok, %d ErrWorkerCrashed, %d other", ok.Load(), crashed.Load(), other.Load())
		if h := health(t, rt, "p"); h.Ready != 3 || h.Failed {
			t.Fatalf("pool after the kills: %+v", h)
		}
	})
}

// TestWorkerSendingGarbageIsReplaced: bytes that are no valid frame end the
// connection with a clear error, the call fails at once rather than hanging,
// and the worker is replaced.
func TestWorkerSendingGarbageIsReplaced(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		if transportOf(t).transport != "native" {
			t.Skip("gRPC's sockets live in its C core, out of a tool's reach")
		}
		rt, _ := start(t, pool(t, "p", "chaos_tools", 1))
		old := health(t, rt, "p").Workers[0].Pid
		_, err := rt.Call(callCtx(t), "p", "write_garbage", nil)
		if !errors.Is(err, snakepit.ErrTransport) {
			t.Fatalf("got %v, want ErrTransport", err)
		}
		if !strings.Contains(err.Error(), "bad frame") {
			t.Fatalf("error does not say what was wrong: %v", err)
		}
		waitFor(t, "the worker to be replaced", 20*time.Second, func() bool {
			w := health(t, rt, "p").Workers[0]
			return w.Ready && w.Pid != old
		})
		res, err := rt.Call(callCtx(t), "p", "ping", nil)
		var pong string
		if err != nil || res.Decode(&pong) != nil || pong != "pong" {
			t.Fatalf("after replacement: %v %q", err, pong)
		}
	})
}

// TestTemporaryWorkersAreNotRestarted: a temporary worker that dies stays
// gone (the others serve on; its last exit is reported); when the last one
// goes, the pool fails and says why.
func TestTemporaryWorkersAreNotRestarted(t *testing.T) {
	p := pool(t, "p", "echo_tools", 2)
	p.Restart.Type = "temporary"
	rt, _ := start(t, p)
	first := killWorker(t, rt, "p", 0)
	waitFor(t, "the dead worker to be let go", 20*time.Second, func() bool { return len(health(t, rt, "p").Workers) == 1 })
	h := health(t, rt, "p")
	if h.Failed || h.Workers[0].Pid == first {
		t.Fatalf("after one temporary worker died: %+v", h)
	}
	if _, err := rt.Call(callCtx(t), "p", "echo", nil); err != nil {
		t.Fatalf("the other worker stopped serving: %v", err)
	}
	killWorker(t, rt, "p", 0)
	waitFor(t, "the pool to fail", 20*time.Second, func() bool { return health(t, rt, "p").Failed })
	if r := health(t, rt, "p").Reason; !strings.Contains(r, "temporary") {
		t.Fatalf("failed pool's reason: %q", r)
	}
}

// TestWorkerHealthSaysHowItsLastProcessEnded: the typed exit reason of a
// crash reaches Health.
func TestWorkerHealthSaysHowItsLastProcessEnded(t *testing.T) {
	rt, _ := start(t, pool(t, "p", "echo_tools", 1))
	old := killWorker(t, rt, "p", 0)
	waitFor(t, "a restart", 20*time.Second, func() bool {
		w := health(t, rt, "p").Workers[0]
		return w.Ready && w.Pid != old
	})
	if got := health(t, rt, "p").Workers[0].LastExit; got != "crashed: signal 9 (SIGKILL)" {
		t.Fatalf("LastExit = %q", got)
	}
}
