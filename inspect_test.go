package snakepit_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/telemetry"
)

func inspectPool(t *testing.T, rep telemetry.Report, name string) telemetry.PoolReport {
	t.Helper()
	for _, p := range rep.Pools {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no pool %q in the report", name)
	return telemetry.PoolReport{}
}

// logTable logs the report as `snakepit inspect` shows it (go test -v).
func logTable(t *testing.T, rep telemetry.Report) {
	t.Helper()
	var b strings.Builder
	if err := telemetry.RenderTable(&b, rep, telemetry.TableOptions{Detailed: true, Recommendations: true}); err != nil {
		t.Fatal(err)
	}
	t.Logf("inspect:\n%s", b.String())
}

func TestInspectReportsWorkersAndPython(t *testing.T) {
	rt, _ := start(t, pool(t, "p", "echo_tools", 2))
	const calls = 6
	for i := 0; i < calls; i++ {
		if _, err := rt.Call(callCtx(t), "p", "echo", map[string]any{"value": i}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := rt.Inspect(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	logTable(t, rep)
	if rep.Time.IsZero() || len(rep.Pools) != 1 {
		t.Fatalf("report: %+v", rep)
	}
	p := inspectPool(t, rep, "p")
	if !strings.HasPrefix(p.Python, "3.") || p.Profile != "process" || p.Size != 2 || p.Ready != 2 || p.Incomplete != "" {
		t.Errorf("pool: python %q profile %q size %d ready %d incomplete %q", p.Python, p.Profile, p.Size, p.Ready, p.Incomplete)
	}
	if p.Capacity != 2 || p.Requests < calls || p.Saturation.Level != telemetry.LevelOK {
		t.Errorf("capacity %d requests %d saturation %+v; want 2, ≥ %d, ok", p.Capacity, p.Requests, p.Saturation, calls)
	}
	if len(p.Workers) != 2 {
		t.Fatalf("workers: %+v", p.Workers)
	}
	for _, w := range p.Workers {
		if w.Pid <= 0 || !w.Ready || w.Uptime <= 0 || w.RSS == 0 || w.PSS == 0 || w.PSS > w.RSS {
			t.Errorf("worker %s: pid %d ready %v uptime %s rss %d pss %d", w.ID, w.Pid, w.Ready, w.Uptime, w.RSS, w.PSS)
		}
	}
}

// TestInspectSaturatedPool: one worker hammered by concurrent slow calls
// is reported busy (warn) and the queue-often-full rule asks for more
// workers, citing the numbers.
func TestInspectSaturatedPool(t *testing.T) {
	rt, _ := start(t, pool(t, "p", "echo_tools", 1))
	const calls = 10
	var wg sync.WaitGroup
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := rt.Call(ctx, "p", "sleep", map[string]any{"seconds": 0.3}); err != nil {
				t.Error(err)
			}
		}()
	}
	defer wg.Wait()
	waitFor(t, "calls queued behind the one worker", 20*time.Second, func() bool {
		h := health(t, rt, "p")
		return h.Queued >= 5 && h.NoFreeCapacity >= 5
	})
	rep, err := rt.Inspect(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	logTable(t, rep)
	p := inspectPool(t, rep, "p")
	if p.Saturation.Level != telemetry.LevelWarn || !strings.Contains(p.Saturation.Why, "calls queued") {
		t.Errorf("saturation %+v, want warn with calls queued", p.Saturation)
	}
	if p.Utilisation != 1 || p.Load != 1 || p.Capacity != 1 {
		t.Errorf("utilisation %v (%d/%d), want 1 (1/1)", p.Utilisation, p.Load, p.Capacity)
	}
	var rec *telemetry.Recommendation
	for i := range p.Recommendations {
		if p.Recommendations[i].Rule == "queue-often-full" {
			rec = &p.Recommendations[i]
		}
	}
	if rec == nil {
		t.Fatalf("no queue-often-full recommendation: %+v", p.Recommendations)
	}
	if rec.Evidence["no_free_capacity"] < 5 || rec.Evidence["size"] != 1 || rec.Evidence["suggested_size"] < 2 ||
		!strings.Contains(rec.Message, "PoolConfig.Size from 1") {
		t.Errorf("recommendation %+v", rec)
	}
}

// busyFor keeps callers calling tool on pool until the pool's workers have
// been busy for want in total.
func busyFor(t *testing.T, rt *snakepit.Runtime, pool, tool string, args map[string]any, callers int, want time.Duration) {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := rt.Call(callCtx(t), pool, tool, args); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	waitFor(t, "the workers to be busy long enough", 60*time.Second, func() bool {
		var busy time.Duration
		for _, w := range health(t, rt, pool).Workers {
			busy += w.Busy
		}
		return busy >= want
	})
	close(stop)
	wg.Wait()
}

// TestInspectTellsCPUBoundFromIOBoundOnGILThreads: the inspector measures
// CPU per busy second, so CPU-bound calls on GIL-enabled thread-profile
// workers get the cpu-bound-on-gil-threads recommendation with the number,
// and I/O-bound calls on the same pool shape do not.
func TestInspectTellsCPUBoundFromIOBoundOnGILThreads(t *testing.T) {
	threads := func(name string) snakepit.PoolConfig {
		p := pool(t, name, "profile_bench", 1)
		p.Profile, p.ThreadsPerWorker, p.Python = "thread", 4, "/usr/bin/python3" // a GIL build
		return p
	}
	rt, _ := start(t, threads("cpu"), threads("io"))
	busyFor(t, rt, "cpu", "cpu", map[string]any{"n": 200_000}, 4, 2*time.Second)
	busyFor(t, rt, "io", "io", map[string]any{"seconds": 0.02}, 4, 2*time.Second)
	rep, err := rt.Inspect(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	logTable(t, rep)
	cpu, io := inspectPool(t, rep, "cpu"), inspectPool(t, rep, "io")
	if cpu.CallCPUFraction == nil || *cpu.CallCPUFraction < 0.5 || io.CallCPUFraction == nil || *io.CallCPUFraction > 0.3 {
		t.Fatalf("CPU per busy second: cpu pool %v, io pool %v", deref(cpu.CallCPUFraction), deref(io.CallCPUFraction))
	}
	if r := findRule(cpu, "cpu-bound-on-gil-threads"); r == nil || r.Severity != telemetry.SeverityWarn || r.Evidence["call_cpu_fraction"] < 0.5 {
		t.Fatalf("cpu pool recommendations: %+v", cpu.Recommendations)
	}
	if r := findRule(io, "cpu-bound-on-gil-threads"); r != nil {
		t.Fatalf("I/O-bound pool told it is CPU-bound: %+v", r)
	}
}

func deref(f *float64) any {
	if f == nil {
		return nil
	}
	return *f
}

func findRule(p telemetry.PoolReport, id string) *telemetry.Recommendation {
	for i := range p.Recommendations {
		if p.Recommendations[i].Rule == id {
			return &p.Recommendations[i]
		}
	}
	return nil
}
