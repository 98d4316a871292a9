package snakepit_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
)

func threadPool(t *testing.T, adapter string, size, threads int) snakepit.PoolConfig {
	p := pool(t, "p", adapter, size)
	p.Profile, p.ThreadsPerWorker = "thread", threads
	return p
}

// concurrently makes n calls at once and returns their results and errors.
func concurrently(t *testing.T, rt *snakepit.Runtime, n int, tool string, args map[string]any) ([]*snakepit.Result, []error) {
	results, errs := make([]*snakepit.Result, n), make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = rt.Call(callCtx(t), "p", tool, args)
		}()
	}
	wg.Wait()
	return results, errs
}

// TestThreadProfileRunsCallsAtOnce proves concurrency without timing: four
// calls that each wait on one threading.Barrier(4) can only all pass if they
// run at the same time in the one worker process.
func TestThreadProfileRunsCallsAtOnce(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, threadPool(t, "thread_tools", 1, 4))
		_, errs := concurrently(t, rt, 4, "meet", map[string]any{"parties": 4, "timeout": 20})
		for i, err := range errs {
			if err != nil {
				t.Fatalf("call %d on a 4-thread worker: %v", i, err)
			}
		}
		if h := health(t, rt, "p"); h.Profile != "thread" || h.Workers[0].Capacity != 4 {
			t.Fatalf("health = %+v", h)
		}
	})
}

func TestProcessProfileRunsOneCallAtATime(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "thread_tools", 1))
		_, errs := concurrently(t, rt, 4, "meet", map[string]any{"parties": 4, "timeout": 0.5})
		for i, err := range errs {
			var pe *snakepit.PythonError
			if !errors.As(err, &pe) || !strings.Contains(pe.Type, "BrokenBarrierError") {
				t.Fatalf("call %d on a process-profile worker: got %v, want the barrier to break", i, err)
			}
		}
	})
}

func TestRoutingNeverExceedsCapacity(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		const size, threads, calls = 2, 3, 24
		rt, _ := start(t, threadPool(t, "thread_tools", size, threads))
		_, errs := concurrently(t, rt, calls, "track", map[string]any{"seconds": 0.02})
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		stats, err := rt.Stats(callCtx(t), "p")
		if err != nil || len(stats) != size {
			t.Fatalf("stats: %v %v", stats, err)
		}
		for _, s := range stats {
			if s.MaxInFlight > threads || s.MaxInFlight < 1 || s.Profile != "thread" {
				t.Fatalf("worker %s ran %d calls at once with capacity %d (%+v)", s.ID, s.MaxInFlight, threads, s)
			}
		}
		if h := health(t, rt, "p"); h.NoFreeCapacity == 0 || h.Workers[0].AtCapacity+h.Workers[1].AtCapacity == 0 {
			t.Fatalf("%d calls on %d slots left no trace of a full pool: %+v", calls, size*threads, h)
		}
	})
}

// TestLeastLoadedSpread: four calls that must all run at once on two
// 4-thread workers land two on each (a first-fit router would put all four
// on the first).
func TestLeastLoadedSpread(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, threadPool(t, "rendezvous", 2, 4))
		dir := t.TempDir()
		results, errs := concurrently(t, rt, 4, "arrive", map[string]any{"directory": dir, "n": 4})
		perPid := map[int]int{}
		for i, res := range results {
			var pid int
			if errs[i] != nil || res.Decode(&pid) != nil {
				t.Fatalf("call %d: %v", i, errs[i])
			}
			perPid[pid]++
		}
		if len(perPid) != 2 {
			t.Fatalf("calls per worker pid: %v, want 2 on each of 2", perPid)
		}
		for pid, n := range perPid {
			if n != 2 {
				t.Fatalf("calls per worker pid: %v (pid %d got %d), want 2 each", perPid, pid, n)
			}
		}
	})
}

func TestSerialToolIsSerialised(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, threadPool(t, "thread_tools", 1, 4))
		_, errs := concurrently(t, rt, 4, "serial_track", map[string]any{"seconds": 0.02})
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		res, err := rt.Call(callCtx(t), "p", "serial_max_seen", nil)
		var max int
		if err != nil || res.Decode(&max) != nil || max != 1 {
			t.Fatalf("a thread_safe=False tool ran %d at once (%v), want 1", max, err)
		}
	})
}

func TestThreadProfileRefusesUndeclaredAdapter(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		log, _ := testLogger(t)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, err := snakepit.Start(ctx, snakepit.Config{Logger: log, Pools: []snakepit.PoolConfig{threadPool(t, "unsafe_tools", 1, 4)}})
		if !errors.Is(err, snakepit.ErrBootFailed) || !strings.Contains(err.Error(), "not declared thread-safe") ||
			!strings.Contains(err.Error(), "ThreadSafeAdapter") {
			t.Fatalf("got %v, want a boot failure saying how to declare thread safety", err)
		}
	})
}

// TestAutoProfile: auto picks threads only where the GIL is really off.
func TestAutoProfile(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		p := pool(t, "p", "thread_tools", 1)
		p.Profile, p.ThreadsPerWorker = "auto", 3
		rt, _ := start(t, p)
		want, capacity := "process", 1
		if transportOf(t).name == "native-3.13t" {
			want, capacity = "thread", 3
		}
		if h := health(t, rt, "p"); h.Profile != want || h.Workers[0].Capacity != capacity {
			t.Fatalf("auto chose %s with capacity %d, want %s with %d", h.Profile, h.Workers[0].Capacity, want, capacity)
		}
	})
}

// TestThreadSafetyChecksReachTheWorker: with the opt-in checker on, two
// threads inside a @snakepit.single_threaded function at once are counted and
// reach Go through Stats.
func TestThreadSafetyChecksReachTheWorker(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		p := threadPool(t, "violation_tools", 1, 2)
		p.ThreadSafetyChecks = true
		rt, logs := start(t, p)
		if _, errs := concurrently(t, rt, 2, "enter", nil); errs[0] != nil || errs[1] != nil {
			t.Fatalf("calls: %v", errs)
		}
		stats, err := rt.Stats(callCtx(t), "p")
		if err != nil || len(stats) != 1 || stats[0].ThreadViolations < 1 {
			t.Fatalf("stats %+v (%v): want at least one thread violation counted", stats, err)
		}
		if !strings.Contains(logs.String(), "thread checks on") {
			t.Fatalf("the worker did not report its checker on:\n%s", logs.String())
		}
	})
}
