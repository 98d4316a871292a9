package snakepit_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/telemetry"
)

// crashOf calls tool and returns the *WorkerCrashedError it must end with,
// and the worker.crashed event that goes with it.
func crashOf(t *testing.T, rt *snakepit.Runtime, ev *eventLog, n int, pool, tool string, args any) (*snakepit.WorkerCrashedError, telemetry.WorkerCrashed) {
	t.Helper()
	_, err := rt.Call(callCtx(t), pool, tool, args)
	var crashed *snakepit.WorkerCrashedError
	if !errors.As(err, &crashed) {
		t.Fatalf("%s: got %v, want *WorkerCrashedError", tool, err)
	}
	return crashed, ev.await(t, "worker.crashed", n)[n-1].(telemetry.WorkerCrashed)
}

// TestEveryExitSaysItsCause: an exit code, a segfault, a SIGKILL from
// outside and the hard memory limit each reach the caller and the event with
// their exact cause.
func TestEveryExitSaysItsCause(t *testing.T) {
	p := pool(t, "p", "chaos_tools", 1)
	rt, ev, err := startLogged(t, p, pool(t, "e", "echo_tools", 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Stop(context.Background()) })

	c, e := crashOf(t, rt, ev, 1, "e", "crash", map[string]any{"code": 3})
	if c.Exit.Code != 3 || c.Exit.Signal != 0 || e.Exit != "crashed: exit code 3" || e.ExitCode != 3 || e.OOM != "" {
		t.Errorf("exit 3: error %+v, event %+v", c.Exit, e)
	}

	c, e = crashOf(t, rt, ev, 2, "p", "segfault", nil)
	if c.Exit.Signal != syscall.SIGSEGV || e.Exit != "crashed: signal 11 (SIGSEGV)" || !strings.Contains(c.Error(), "SIGSEGV") {
		t.Errorf("segfault: error %v, event %+v", c, e)
	}
	if !strings.Contains(e.Stderr, "Segmentation fault") {
		t.Errorf("segfault: the event's stderr lacks Python's fatal error:\n%s", e.Stderr)
	}

	// SIGKILL from outside: the memory cgroup tells whether the OOM killer
	// did it, or the error says it cannot be told; never a guess.
	waitFor(t, "the echo pool to be back", 20*time.Second, func() bool { return health(t, rt, "e").Ready == 1 })
	done := make(chan error, 1)
	go func() {
		_, err := rt.Call(callCtx(t), "e", "sleep", map[string]any{"seconds": 30})
		done <- err
	}()
	waitFor(t, "the call to run", 10*time.Second, func() bool { return health(t, rt, "e").InFlight == 1 })
	if err := syscall.Kill(health(t, rt, "e").Workers[0].Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = <-done
	if !errors.As(err, &c) || c.Exit.Signal != syscall.SIGKILL || c.KilledBy != "" {
		t.Fatalf("SIGKILL: %v", err)
	}
	e = ev.await(t, "worker.crashed", 3)[2].(telemetry.WorkerCrashed)
	switch {
	case c.Exit.OOM.Known && !c.Exit.OOM.Killed:
		if !strings.Contains(c.Error(), "not the out-of-memory killer") || !strings.HasPrefix(e.OOM, "no: ") {
			t.Errorf("SIGKILL, OOM ruled out: %v; event OOM %q", c, e.OOM)
		}
	case !c.Exit.OOM.Known:
		if !strings.Contains(c.Error(), "cannot be told") || !strings.HasPrefix(e.OOM, "unknown: ") {
			t.Errorf("SIGKILL, OOM unknown: %v; event OOM %q", c, e.OOM)
		}
	default:
		t.Errorf("a SIGKILL from this test taken for an OOM kill: %+v", c.Exit.OOM)
	}
	t.Logf("SIGKILL from outside: %s (event OOM %q)", c.Exit, e.OOM)
}

// TestStuckWorkerIsKilledWithItsStacks: a tool stuck in time.sleep(60) with
// a 300 ms deadline fails at the deadline; after the grace the worker is
// killed, and the crash event carries the Python stacks naming the stuck
// function.
func TestStuckWorkerIsKilledWithItsStacks(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		p := pool(t, "p", "echo_tools", 1)
		p.Watchdog = snakepit.WatchdogPolicy{HangGrace: 300 * time.Millisecond}
		rt, ev, err := startLogged(t, p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rt.Stop(context.Background()) })
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if _, err := rt.Call(ctx, "p", "sleep", map[string]any{"seconds": 60}); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want the deadline", err)
		}
		e := ev.await(t, "worker.crashed", 1)[0].(telemetry.WorkerCrashed)
		if !strings.Contains(e.KilledBy, "HangGrace") || !strings.Contains(e.Exit, "killed by the runtime") {
			t.Errorf("crash event: %+v", e)
		}
		if !strings.Contains(e.Stacks, "in sleep") || !strings.Contains(e.Stacks, "echo_tools.py") {
			t.Errorf("the stacks do not name the stuck function:\n%s", e.Stacks)
		}
	})
}

// TestCancellationReachesPython: a cooperative tool stops when its caller
// cancels and its worker serves the next call with no restart; an
// uncooperative one gets its worker killed and replaced.
func TestCancellationReachesPython(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		p := pool(t, "p", "echo_tools", 1)
		p.Watchdog = snakepit.WatchdogPolicy{HangGrace: 500 * time.Millisecond}
		rt, _ := start(t, p)
		pid := callPid(t, rt, "p")

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := rt.Call(ctx, "p", "cooperative_loop", map[string]any{"seconds": 60})
			done <- err
		}()
		waitFor(t, "the loop to run", 10*time.Second, func() bool { return health(t, rt, "p").InFlight == 1 })
		cancel()
		cancelled := time.Now()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled call: %v", err)
		}
		waitFor(t, "the worker to be free again", 10*time.Second, func() bool { return health(t, rt, "p").Workers[0].Load == 0 })
		t.Logf("cancel to worker free: %s", time.Since(cancelled))
		if got := callPid(t, rt, "p"); got != pid || health(t, rt, "p").Workers[0].Restarts != 0 {
			t.Fatalf("the cooperative tool's worker was replaced (%d → %d)", pid, got)
		}

		ctx, cancel = context.WithCancel(context.Background())
		started := filepath.Join(t.TempDir(), "started")
		go func() {
			_, err := rt.Call(ctx, "p", "uncooperative_sleep", map[string]any{"seconds": 60, "started": started})
			done <- err
		}()
		// Cancelled before Python starts it, the call would never run.
		waitFor(t, "the sleep to run", 10*time.Second, func() bool { _, err := os.Stat(started); return err == nil })
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled call: %v", err)
		}
		if got := callPid(t, rt, "p"); got == pid {
			t.Fatal("the uncooperative tool's worker was not replaced")
		}
	})
}

// buildGILExtension compiles testdata/pyadapters/gil_ext/gilmod.c against
// python's headers into dir, or skips when no C compiler is found.
func buildGILExtension(t *testing.T, python, dir string) {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		if cc, err = exec.LookPath("gcc"); err != nil {
			t.Skip("skipping: no C compiler (cc, gcc) to build the test extension")
		}
	}
	out, err := exec.Command(python, "-c", "import sysconfig; print(sysconfig.get_paths()['include']); print(sysconfig.get_config_var('EXT_SUFFIX'))").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(out))
	src, _ := filepath.Abs("testdata/pyadapters/gil_ext/gilmod.c")
	build := exec.Command(cc, "-shared", "-fPIC", "-I", lines[0], src, "-o", filepath.Join(dir, "gilmod"+lines[1]))
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the extension: %v\n%s", err, b)
	}
	adapter := "import gilmod  # switches the GIL on: it does not declare free-threading support\nimport snakepit\n\n\n@snakepit.tool(thread_safe=True)\ndef ping() -> str:\n    return gilmod.ping() if hasattr(gilmod, 'ping') else 'pong'\n"
	if err := os.WriteFile(filepath.Join(dir, "gil_adapter.py"), []byte(adapter), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGILTruthOnFreeThreadedPython: an adapter importing an extension that
// does not declare free-threading support makes auto pick processes, and
// the runtime names the module in an event and in the inspector.
func TestGILTruthOnFreeThreadedPython(t *testing.T) {
	ft := os.Getenv(EnvFreeThreadedPython)
	if ft == "" {
		t.Skipf("no free-threaded Python: set $%s (make test does)", EnvFreeThreadedPython)
	}
	dir := t.TempDir()
	buildGILExtension(t, ft, dir)
	p := snakepit.PoolConfig{Name: "p", Adapter: "gil_adapter", Size: 1, Profile: "auto", Python: ft,
		PythonPath: []string{dir}}
	rt, ev, err := startLogged(t, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Stop(context.Background()) })
	if h := health(t, rt, "p"); h.Profile != "process" {
		t.Fatalf("auto picked %q on a free-threaded Python whose adapter switches the GIL on", h.Profile)
	}
	g := ev.await(t, "worker.gil_enabled", 1)[0].(telemetry.GILEnabled)
	if g.Module != "gilmod" || g.When != "adapter import" {
		t.Fatalf("GIL event: %+v", g)
	}
	rep, err := rt.Inspect(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	pr := inspectPool(t, rep, "p")
	if !pr.FreeThreaded || !pr.GILEnabled || pr.GILEnabledBy != "gilmod" {
		t.Fatalf("inspector: free-threaded %v, GIL %v, by %q", pr.FreeThreaded, pr.GILEnabled, pr.GILEnabledBy)
	}
	if r := findRule(pr, "gil-enabled-free-threaded-build"); r == nil || !strings.Contains(r.Message, "gilmod") {
		t.Fatalf("recommendations: %+v", pr.Recommendations)
	}
}

// TestAutoFallsBackWhenAToolSwitchesTheGILOn: an auto pool that started on
// threads (the adapter's import keeps the GIL off) moves to processes when a
// tool's first call imports an extension that switches the GIL on.
func TestAutoFallsBackWhenAToolSwitchesTheGILOn(t *testing.T) {
	ft := os.Getenv(EnvFreeThreadedPython)
	if ft == "" {
		t.Skipf("no free-threaded Python: set $%s (make test does)", EnvFreeThreadedPython)
	}
	dir := t.TempDir()
	buildGILExtension(t, ft, dir)
	lazy := "import snakepit\n\n__snakepit_thread_safe__ = True\n\n\n@snakepit.tool(thread_safe=True)\ndef use_ext() -> str:\n    import gilmod  # switches the GIL on\n    return 'imported'\n\n\n@snakepit.tool(thread_safe=True)\ndef ping() -> str:\n    return 'pong'\n"
	if err := os.WriteFile(filepath.Join(dir, "gil_lazy_adapter.py"), []byte(lazy), 0o644); err != nil {
		t.Fatal(err)
	}
	p := snakepit.PoolConfig{Name: "p", Adapter: "gil_lazy_adapter", Size: 2, Profile: "auto", ThreadsPerWorker: 4,
		Python: ft, PythonPath: []string{dir}, Watchdog: snakepit.WatchdogPolicy{HealthInterval: 50 * time.Millisecond}}
	rt, ev, err := startLogged(t, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Stop(context.Background()) })
	if h := health(t, rt, "p"); h.Profile != "thread" || h.Workers[0].Capacity != 4 {
		t.Fatalf("auto on a free-threaded Python with a GIL-free adapter: %q, capacity %d", h.Profile, h.Workers[0].Capacity)
	}
	if _, err := rt.Call(callCtx(t), "p", "use_ext", nil); err != nil {
		t.Fatal(err)
	}
	g := ev.await(t, "worker.gil_enabled", 1)[0].(telemetry.GILEnabled)
	if g.Module != "gilmod" || g.When != "first call of tool use_ext" {
		t.Fatalf("GIL event: %+v", g)
	}
	waitFor(t, "the pool to move to processes", 60*time.Second, func() bool {
		h := health(t, rt, "p")
		if h.Profile != "process" || h.Ready != 2 || h.Recycles["profile"] != 2 {
			return false
		}
		for _, w := range h.Workers {
			if w.Capacity != 1 {
				return false
			}
		}
		return true
	})
	if _, err := rt.Call(callCtx(t), "p", "ping", nil); err != nil {
		t.Fatal(err)
	}
}
