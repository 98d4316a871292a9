package snakepit_test

import (
	"context"
	"errors"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testkit"
)

// checkNoLeaks records the goroutines running now; the returned func fails
// the test if others are still running 10 s later.
func checkNoLeaks(t *testing.T) func() { return testkit.NoLeaks(t, 10*time.Second) }

// startStoppable starts a runtime the test stops itself, before its leak
// check; should the test fail first, a cleanup stops it.
func startStoppable(t *testing.T, pools ...snakepit.PoolConfig) *snakepit.Runtime {
	t.Helper()
	log, buf := testLogger(t)
	rt, err := snakepit.Start(callCtx(t), snakepit.Config{Pools: pools, Logger: log})
	if err != nil {
		t.Fatalf("Start: %v\nlogs:\n%s", err, buf.String())
	}
	t.Cleanup(func() { _ = rt.Stop(context.Background()) }) // a no-op once stopped
	return rt
}

func ints(t *testing.T, rt *snakepit.Runtime, ctx context.Context, tool string, args any, opts ...snakepit.CallOption) ([]int, error) {
	t.Helper()
	var got []int
	for chunk, err := range rt.Stream(ctx, "p", tool, args, opts...) {
		if err != nil {
			return got, err
		}
		var v int
		if err := chunk.Decode(&v); err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	return got, nil
}

func TestStreamYieldsInOrderThenEnds(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 1))
		got, err := ints(t, rt, callCtx(t), "count", map[string]any{"n": 50, "start": 7}, snakepit.Window(4))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 50 || got[0] != 7 || got[49] != 56 {
			t.Fatalf("got %d chunks %v..., want 7..56", len(got), got[:min(len(got), 5)])
		}
		for i, v := range got {
			if v != 7+i {
				t.Fatalf("chunk %d is %d: out of order", i, v)
			}
		}
		// A plain tool streams its one result.
		one, err := ints(t, rt, callCtx(t), "echo", map[string]any{"value": 5})
		if err != nil || len(one) != 1 || one[0] != 5 {
			t.Fatalf("plain tool as a stream: %v, %v", one, err)
		}
		if _, err := rt.Call(callCtx(t), "p", "echo", nil); err != nil {
			t.Fatalf("the worker is not free after the streams: %v", err)
		}
	})
}

// TestStreamBreakClosesTheGenerator: a loop that breaks after 3 chunks
// returns only once Python closed the generator, on the thread running it:
// its finally has run, and the only worker takes the next call.
func TestStreamBreakClosesTheGenerator(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		defer checkNoLeaks(t)()
		rt := startStoppable(t, pool(t, "p", "flow_tools", 1), pool(t, "e", "echo_tools", 1))
		for _, window := range []int{1, 2, 32} {
			marker := filepath.Join(t.TempDir(), "finally")
			n := 0
			began := time.Now()
			var broke time.Time
			for chunk, err := range rt.Stream(callCtx(t), "p", "ticks", map[string]any{"n": 1_000_000, "marker": marker}, snakepit.Window(window)) {
				if err != nil {
					t.Fatal(err)
				}
				var v int
				_ = chunk.Decode(&v)
				if v != n {
					t.Fatalf("chunk %d is %d", n, v)
				}
				if n++; n == 3 {
					broke = time.Now()
					break
				}
			}
			returned := time.Now()
			data, err := os.ReadFile(marker)
			if err != nil {
				t.Fatalf("window %d: the generator's finally had not run when the loop ended: %v", window, err)
			}
			threads := strings.Fields(string(data))
			if len(threads) != 2 || threads[0] != threads[1] {
				t.Fatalf("window %d: finally ran on another thread than the generator: %q", window, threads)
			}
			if _, err := rt.Call(callCtx(t), "p", "threads", nil); err != nil {
				t.Fatalf("window %d: next call on the pool of one: %v", window, err)
			}
			t.Logf("window %d: first 3 chunks in %s; break to finally done %s", window,
				broke.Sub(began).Round(time.Microsecond), returned.Sub(broke).Round(time.Microsecond))
		}
		// The async generator's finally runs too.
		marker := filepath.Join(t.TempDir(), "afinally")
		for _, err := range rt.Stream(callCtx(t), "e", "aguarded", map[string]any{"n": 1_000_000, "marker": marker}) {
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		if _, err := os.Stat(marker); err != nil {
			t.Fatalf("the async generator's finally had not run when the loop ended: %v", err)
		}
		if err := rt.Stop(callCtx(t)); err != nil {
			t.Fatal(err)
		}
	})
}

// TestStreamFullWindowLeaksNoThread: a sync generator blocked on a full
// window (the consumer takes nothing) is released by the break: the
// worker's thread count is back where it was.
func TestStreamFullWindowLeaksNoThread(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "flow_tools", 1))
		threads := func() int {
			r, err := rt.Call(callCtx(t), "p", "threads", nil)
			if err != nil {
				t.Fatal(err)
			}
			var n int
			_ = r.Decode(&n)
			return n
		}
		before := threads()
		for round := range 5 {
			marker := filepath.Join(t.TempDir(), "finally")
			// The consumer takes one chunk and no more: the generator fills
			// the window of 2 and blocks on it until the stream is stopped.
			next, stop := iter.Pull2(rt.Stream(callCtx(t), "p", "ticks", map[string]any{"n": 1000, "marker": marker}, snakepit.Window(2)))
			if _, err, ok := next(); !ok || err != nil {
				t.Fatalf("round %d: first chunk: %v", round, err)
			}
			stop()
			if _, err := os.Stat(marker); err != nil {
				t.Fatalf("round %d: finally had not run after the stream was stopped", round)
			}
		}
		if after := threads(); after != before {
			t.Fatalf("worker threads: %d before, %d after 5 stopped streams", before, after)
		}
	})
}

// TestStreamWindowBoundsChunksInFlight: 10,000 chunks in order to a slow
// consumer; Python never has more than the window in flight.
func TestStreamWindowBoundsChunksInFlight(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 1))
		const window, total = 8, 10_000
		i, maxInFlight := 0, 0
		for chunk, err := range rt.Stream(callCtx(t), "p", "count_window", map[string]any{"n": total}, snakepit.Window(window)) {
			if err != nil {
				t.Fatal(err)
			}
			var c struct {
				I        int `json:"i"`
				InFlight int `json:"in_flight"`
			}
			if err := chunk.Decode(&c); err != nil {
				t.Fatal(err)
			}
			if c.I != i {
				t.Fatalf("chunk %d is item %d", i, c.I)
			}
			if c.InFlight > window {
				t.Fatalf("item %d was produced with %d chunks in flight, over the window of %d", c.I, c.InFlight, window)
			}
			maxInFlight = max(maxInFlight, c.InFlight)
			if i%500 == 0 {
				time.Sleep(5 * time.Millisecond) // a slow consumer: the producer must wait
			}
			i++
		}
		if i != total {
			t.Fatalf("got %d chunks, want %d", i, total)
		}
		t.Logf("%d chunks in order; at most %d in flight (window %d)", total, maxInFlight, window)
	})
}

func TestStreamErrorAfterChunks(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 1))
		got, err := ints(t, rt, callCtx(t), "fail_after", map[string]any{"n": 3})
		var pe *snakepit.PythonError
		if !errors.As(err, &pe) {
			t.Fatalf("got %v, want a *PythonError after the chunks", err)
		}
		if len(got) != 3 || !strings.Contains(pe.Message, "boom") || !strings.Contains(pe.Traceback, "fail_after") {
			t.Fatalf("chunks %v, error %q, traceback:\n%s", got, pe.Message, pe.Traceback)
		}
		// Bad input gets a clear error before anything runs.
		if _, err := ints(t, rt, callCtx(t), "count", map[string]any{"n": 1}, snakepit.Window(0)); err != nil {
			t.Fatalf("Window(0) means the default: %v", err)
		}
		if _, err := ints(t, rt, callCtx(t), "count", map[string]any{"n": 1}, snakepit.Window(-1)); !errors.Is(err, snakepit.ErrBadArguments) {
			t.Fatalf("Window(-1): got %v, want ErrBadArguments", err)
		}
		if _, err := ints(t, rt, callCtx(t), "nope", nil); !errors.Is(err, snakepit.ErrUnknownTool) {
			t.Fatalf("unknown tool: got %v", err)
		}
		if _, err := ints(t, rt, callCtx(t), "count", map[string]any{"m": 1}); !errors.Is(err, snakepit.ErrBadArguments) {
			t.Fatalf("bad arguments: got %v", err)
		}
		if _, err := rt.Call(callCtx(t), "p", "echo", nil); err != nil {
			t.Fatal(err)
		}
	})
}

// TestStreamContextCancel: cancelling the context ends the stream with the
// context's error; Python closes the generator and the worker is freed.
func TestStreamContextCancel(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "flow_tools", 1))
		marker := filepath.Join(t.TempDir(), "finally")
		ctx, cancel := context.WithCancel(callCtx(t))
		defer cancel()
		n := 0
		var last error
		for _, err := range rt.Stream(ctx, "p", "ticks", map[string]any{"n": 1_000_000, "marker": marker}, snakepit.Window(4)) {
			if err != nil {
				last = err
				break
			}
			if n++; n == 5 {
				cancel()
			}
		}
		if !errors.Is(last, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", last)
		}
		waitFor(t, "the generator's finally", 10*time.Second, func() bool { _, err := os.Stat(marker); return err == nil })
		if _, err := rt.Call(callCtx(t), "p", "threads", nil); err != nil {
			t.Fatal(err)
		}
	})
}
