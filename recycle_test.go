package snakepit_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/telemetry"
)

// recycleLog collects a runtime's recycle events.
type recycleLog struct {
	mu     sync.Mutex
	events []telemetry.WorkerRecycled
}

func watchRecycles(t *testing.T, rt *snakepit.Runtime) *recycleLog {
	l := &recycleLog{}
	sub := rt.Subscribe(func(e telemetry.Event) {
		if r, ok := e.(telemetry.WorkerRecycled); ok {
			l.mu.Lock()
			l.events = append(l.events, r)
			l.mu.Unlock()
		}
	})
	t.Cleanup(sub.Close)
	return l
}

func (l *recycleLog) byReason(reason string) []telemetry.WorkerRecycled {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []telemetry.WorkerRecycled
	for _, e := range l.events {
		if e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// load keeps callers calling echo until stopped; every call must succeed.
type load struct {
	calls, failed atomic.Int64
	firstErr      atomic.Value
	stop          chan struct{}
	wg            sync.WaitGroup
}

func startLoad(t *testing.T, rt *snakepit.Runtime, pool string, callers int) *load {
	l := &load{stop: make(chan struct{})}
	for i := 0; i < callers; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := rt.Call(ctx, pool, "echo", map[string]any{"value": 1})
				cancel()
				l.calls.Add(1)
				if err != nil {
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	return l
}

// finish stops the load and fails the test if any call failed.
func (l *load) finish(t *testing.T) int64 {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if n := l.failed.Load(); n > 0 {
		t.Fatalf("%d of %d calls failed; first: %v", n, l.calls.Load(), l.firstErr.Load())
	}
	return l.calls.Load()
}

func lifecyclePool(t *testing.T, size int, r snakepit.RecyclePolicy) snakepit.PoolConfig {
	p := pool(t, "p", "lifecycle_tools", size)
	p.Recycle = r
	// One crash more than this would fail the pool: recycles must not count.
	p.Restart = snakepit.RestartPolicy{MaxRestarts: 1, Period: time.Hour, InitialBackoff: time.Millisecond}
	return p
}

// TestRecycleByRequestsLosesNoCall: a pool of 4 recycling every ~25 calls
// under 16 concurrent callers serves thousands of calls without one failing,
// and its many recycles never trip the restart intensity of 1.
func TestRecycleByRequestsLosesNoCall(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, lifecyclePool(t, 4, snakepit.RecyclePolicy{MaxRequests: 25, CheckInterval: 5 * time.Millisecond, MaxConcurrent: 2}))
		events := watchRecycles(t, rt)
		l := startLoad(t, rt, "p", 16)
		maxBusy := 0
		waitFor(t, "2000 calls and 12 recycles", 90*time.Second, func() bool {
			h := health(t, rt, "p")
			busy := 0
			for _, w := range h.Workers {
				if w.Starting || w.Retiring {
					busy++
				}
			}
			maxBusy = max(maxBusy, busy)
			return l.calls.Load() >= 2000 && len(events.byReason("requests")) >= 12
		})
		calls := l.finish(t)
		if maxBusy > 2 {
			t.Errorf("%d workers were recycling at once, MaxConcurrent is 2", maxBusy)
		}
		h := health(t, rt, "p")
		if h.Failed || h.Ready != 4 {
			t.Fatalf("pool after the recycles: failed=%v (%s) ready=%d", h.Failed, h.Reason, h.Ready)
		}
		for _, w := range h.Workers[:4] {
			if w.Restarts != 0 {
				t.Errorf("worker %s counts %d restarts: recycles are not failures", w.ID, w.Restarts)
			}
		}
		for _, e := range events.byReason("requests") {
			if e.Requests < 25 || e.Uptime <= 0 || e.Replacement == "" || e.Replacement == e.Worker {
				t.Errorf("bad recycle event: %+v", e)
			}
		}
		if h.Recycles["requests"] < 12 {
			t.Errorf("Health counts %d recycles by requests", h.Recycles["requests"])
		}
		t.Logf("%d calls, %d recycles, none failed", calls, len(events.byReason("requests")))
	})
}

// TestRecycleByMemory: a worker over MaxMemory is drained and replaced while
// calls go on; one over HardMemoryLimit is killed at once and restarted,
// neither counting as a failure.
func TestRecycleByMemory(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, lifecyclePool(t, 2, snakepit.RecyclePolicy{MaxMemory: 200 << 20, HardMemoryLimit: 600 << 20,
			CheckInterval: 10 * time.Millisecond}))
		events := watchRecycles(t, rt)
		l := startLoad(t, rt, "p", 4)
		var hogPid int
		res, err := rt.Call(callCtx(t), "p", "hog", map[string]any{"mib": 300})
		if err != nil {
			t.Fatal(err)
		}
		if err := res.Decode(&hogPid); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a recycle for memory", 30*time.Second, func() bool { return len(events.byReason("memory")) == 1 })
		l.finish(t)
		e := events.byReason("memory")[0]
		if e.RSS < 300<<20 || !strings.Contains(e.Detail, "over 200.0 MiB") {
			t.Fatalf("memory recycle event: %+v", e)
		}
		waitFor(t, "the hog's process to exit", 30*time.Second, func() bool { return !processAlive(hogPid) })

		// Over the hard limit: killed at once (the hog call itself may be
		// the victim, and then it says why), then replaced.
		_, err = rt.Call(callCtx(t), "p", "hog", map[string]any{"mib": 700})
		var crashed *snakepit.WorkerCrashedError
		if err != nil && !(errors.As(err, &crashed) && strings.Contains(crashed.KilledBy, "hard limit")) {
			t.Fatalf("hog over the hard limit: %v", err)
		}
		waitFor(t, "a hard-limit recycle", 30*time.Second, func() bool { return len(events.byReason("memory-hard-limit")) == 1 })
		waitFor(t, "the pool whole again, its memory sampled", 30*time.Second, func() bool {
			h := health(t, rt, "p")
			return h.Ready == 2 && h.Workers[0].RSS > 0 && h.Workers[1].RSS > 0
		})
		h := health(t, rt, "p")
		for _, w := range h.Workers {
			if w.Restarts != 0 {
				t.Errorf("worker %s counts %d restarts: recycles are not failures", w.ID, w.Restarts)
			}
			if w.RSS > 200<<20 {
				t.Errorf("worker %s: RSS %d after the recycles", w.ID, w.RSS)
			}
		}
		if _, err := rt.Call(callCtx(t), "p", "echo", nil); err != nil {
			t.Fatal(err)
		}
	})
}

func processAlive(pid int) bool {
	_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	return err == nil && !isZombie(strconv.Itoa(pid))
}

// TestRecycleByAge: short real TTLs recycle each worker once it is old
// enough, and calls go on.
func TestRecycleByAge(t *testing.T) {
	rt, _ := start(t, lifecyclePool(t, 2, snakepit.RecyclePolicy{MaxAge: 300 * time.Millisecond, AgeJitter: 200 * time.Millisecond,
		CheckInterval: 10 * time.Millisecond}))
	events := watchRecycles(t, rt)
	l := startLoad(t, rt, "p", 2)
	waitFor(t, "three recycles by age", 60*time.Second, func() bool { return len(events.byReason("age")) >= 3 })
	l.finish(t)
	for _, e := range events.byReason("age") {
		if e.Uptime < 300*time.Millisecond {
			t.Errorf("recycled at %s, before MaxAge: %+v", e.Uptime, e)
		}
	}
}

// TestManualRecycle: Recycle replaces one worker under a fresh id while its
// in-flight call finishes; the old id is then unknown.
func TestManualRecycle(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, lifecyclePool(t, 1, snakepit.RecyclePolicy{}))
		events := watchRecycles(t, rt)
		old := health(t, rt, "p").Workers[0]
		slow := make(chan error, 1)
		go func() {
			_, err := rt.Call(callCtx(t), "p", "slow", map[string]any{"seconds": 0.5})
			slow <- err
		}()
		waitFor(t, "the slow call to run", 10*time.Second, func() bool { return health(t, rt, "p").InFlight == 1 })
		if err := rt.Recycle(callCtx(t), "p", old.ID); err != nil {
			t.Fatal(err)
		}
		if err := <-slow; err != nil {
			t.Fatalf("the call in flight during the recycle failed: %v", err)
		}
		h := health(t, rt, "p")
		if len(h.Workers) != 1 || h.Workers[0].ID == old.ID || h.Workers[0].Pid == old.Pid || !h.Workers[0].Ready {
			t.Fatalf("after Recycle: %+v (old %s pid %d)", h.Workers, old.ID, old.Pid)
		}
		waitFor(t, "the recycle event", 10*time.Second, func() bool { return len(events.byReason("manual")) > 0 })
		if e := events.byReason("manual"); len(e) != 1 || e[0].Worker != old.ID || e[0].Requests != 1 {
			t.Fatalf("manual recycle events: %+v", e)
		}
		err := rt.Recycle(callCtx(t), "p", old.ID)
		if !errors.Is(err, snakepit.ErrUnknownWorker) || !strings.Contains(err.Error(), h.Workers[0].ID) {
			t.Fatalf("recycling a gone worker: %v (want ErrUnknownWorker listing %s)", err, h.Workers[0].ID)
		}
		if err := rt.Recycle(callCtx(t), "nope", "x"); !errors.Is(err, snakepit.ErrUnknownPool) {
			t.Fatalf("unknown pool: %v", err)
		}
	})
}

// TestRollingRestartAfterDeploy: RecycleAll under load replaces every
// worker with no failed call, picking up new Python code; when the new code
// cannot even import, the old workers keep serving and the error says why.
func TestRollingRestartAfterDeploy(t *testing.T) {
	dir := t.TempDir()
	deploy := func(version string) {
		src := "import snakepit\n\n@snakepit.tool\ndef echo(value=None):\n    return value\n\n@snakepit.tool\ndef version():\n    return " + version + "\n"
		if err := os.WriteFile(filepath.Join(dir, "deployed_tools.py"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deploy("1")
	p := lifecyclePool(t, 3, snakepit.RecyclePolicy{})
	p.Adapter, p.PythonPath = "deployed_tools", []string{dir}
	rt, _ := start(t, p)
	before := health(t, rt, "p").Workers
	l := startLoad(t, rt, "p", 8)
	deploy("2")
	if err := rt.RecycleAll(callCtx(t), "p"); err != nil {
		t.Fatal(err)
	}
	after := health(t, rt, "p").Workers
	if len(after) != 3 {
		t.Fatalf("after RecycleAll: %+v", after)
	}
	for i := range after {
		for j := range before {
			if after[i].Pid == before[j].Pid {
				t.Fatalf("worker pid %d survived the rolling restart", after[i].Pid)
			}
		}
	}
	for i := 0; i < 6; i++ {
		var v int
		res, err := rt.Call(callCtx(t), "p", "version", nil)
		if err != nil || res.Decode(&v) != nil || v != 2 {
			t.Fatalf("after the rolling restart: version %d, %v", v, err)
		}
	}

	if err := os.WriteFile(filepath.Join(dir, "deployed_tools.py"), []byte("import snakepit\ndef broken(:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := rt.RecycleAll(callCtx(t), "p")
	if !errors.Is(err, snakepit.ErrBootFailed) || !strings.Contains(err.Error(), "SyntaxError") {
		t.Fatalf("rolling restart onto broken code: %v, want ErrBootFailed with the SyntaxError", err)
	}
	if n := strings.Count(err.Error(), "did not start"); n != 1 {
		t.Errorf("the rollout went on after its first failed replacement: %d replacements failed", n)
	}
	calls := l.finish(t)
	h := health(t, rt, "p")
	if h.Failed || h.Ready != 3 {
		t.Fatalf("pool after a failed rolling restart: failed=%v %s ready=%d", h.Failed, h.Reason, h.Ready)
	}
	t.Logf("%d calls during two rolling restarts, none failed", calls)
}
