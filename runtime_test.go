package snakepit_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
)

func TestRoundTrip(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		p := pool(t, "default", "examples.textstats", 2)
		rt, _ := start(t, p)
		res, err := rt.Call(callCtx(t), "default", "word_count", map[string]any{"text": "a b c"})
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if err := res.Decode(&n); err != nil {
			t.Fatal(err)
		}
		if n != 3 {
			t.Fatalf("word_count = %d, want 3", n)
		}
		if !strings.HasPrefix(res.Worker(), "default-") {
			t.Fatalf("Worker() = %q", res.Worker())
		}
	})
}

func TestStructArgsAndDefaults(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "examples.textstats", 1))
		args := struct {
			Text string `json:"text"`
			N    int    `json:"n"`
		}{"b a b c b a", 2}
		res, err := rt.Call(callCtx(t), "p", "top_words", args)
		if err != nil {
			t.Fatal(err)
		}
		var top [][]any
		if err := res.Decode(&top); err != nil {
			t.Fatal(err)
		}
		if len(top) != 2 || top[0][0] != "b" || top[0][1] != float64(3) {
			t.Fatalf("top_words = %v", top)
		}
	})
}

func TestBinaryArgumentsTravelRaw(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 1))
		data := make([]byte, 3<<20)
		for i := range data {
			data[i] = byte(i * 7)
		}
		res, err := rt.Call(callCtx(t), "p", "echo_bytes", map[string]any{"data": data})
		if err != nil {
			t.Fatal(err)
		}
		got, isRaw := res.Bytes()
		if !isRaw || !bytes.Equal(got, data) {
			t.Fatalf("echo_bytes: raw=%v, %d bytes back, equal=%v", isRaw, len(got), bytes.Equal(got, data))
		}
	})
}

func TestClassAdapterLoadsOncePerWorker(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "m", "examples.sentiment:SentimentModel", 1))
		for i := 0; i < 5; i++ {
			if _, err := rt.Call(callCtx(t), "m", "score", map[string]any{"text": "good great"}); err != nil {
				t.Fatal(err)
			}
		}
		res, err := rt.Call(callCtx(t), "m", "info", nil)
		if err != nil {
			t.Fatal(err)
		}
		var info map[string]any
		if err := res.Decode(&info); err != nil {
			t.Fatal(err)
		}
		if info["loads"] != float64(1) {
			t.Fatalf("model loaded %v times in one worker, want 1 (info %v)", info["loads"], info)
		}
	})
}

func TestConcurrentCallsUseEveryWorker(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		const size = 4
		rt, _ := start(t, pool(t, "p", "rendezvous", size))
		dir := t.TempDir()
		var wg sync.WaitGroup
		pids := make([]int, size)
		errs := make([]error, size)
		for i := 0; i < size; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := rt.Call(callCtx(t), "p", "arrive", map[string]any{"directory": dir, "n": size})
				if err == nil {
					err = res.Decode(&pids[i])
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		seen := map[int]bool{}
		for i := range pids {
			if errs[i] != nil {
				t.Fatalf("call %d: %v", i, errs[i])
			}
			seen[pids[i]] = true
		}
		if len(seen) != size {
			t.Fatalf("%d concurrent calls ran on %d distinct workers, want %d", size, len(seen), size)
		}
	})
}

func TestPythonExceptionBecomesPythonError(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 1))
		_, err := rt.Call(callCtx(t), "p", "raise_error", map[string]any{"message": "it broke"})
		var pe *snakepit.PythonError
		if !errors.As(err, &pe) {
			t.Fatalf("got %T %v, want *PythonError", err, err)
		}
		if pe.Type != "builtins.RuntimeError" || pe.Message != "it broke" || !strings.Contains(pe.Traceback, "raise_error") {
			t.Fatalf("PythonError = %+v", pe)
		}
		// The worker survives its tool's exception.
		if _, err := rt.Call(callCtx(t), "p", "echo", map[string]any{"value": 1}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestErrorsForBadCalls(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 1))
		cases := []struct {
			name       string
			pool, tool string
			args       any
			want       error
		}{
			{"unknown pool", "nope", "echo", nil, snakepit.ErrUnknownPool},
			{"unknown tool", "p", "nope", nil, snakepit.ErrUnknownTool},
			{"empty tool name", "p", "", nil, snakepit.ErrUnknownTool},
			{"missing argument", "p", "raise_error", nil, snakepit.ErrBadArguments},
			{"unexpected argument", "p", "echo", map[string]any{"bogus": 1}, snakepit.ErrBadArguments},
			{"args not an object", "p", "echo", []int{1, 2}, snakepit.ErrBadArguments},
			{"args not encodable", "p", "echo", map[string]any{"value": make(chan int)}, snakepit.ErrBadArguments},
			{"result not encodable", "p", "unencodable", nil, snakepit.ErrUnencodableResult},
			{"NaN result", "p", "nan", nil, snakepit.ErrUnencodableResult},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				_, err := rt.Call(callCtx(t), c.pool, c.tool, c.args)
				if !errors.Is(err, c.want) {
					t.Fatalf("got %v, want %v", err, c.want)
				}
			})
		}
		if _, err := rt.Call(callCtx(t), "p", "echo", map[string]any{"value": "still fine"}); err != nil {
			t.Fatalf("worker unusable after bad calls: %v", err)
		}
	})
}

func TestWorkerKilledMidCall(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 2))
		errc := make(chan error, 1)
		go func() {
			_, err := rt.Call(callCtx(t), "p", "sleep", map[string]any{"seconds": 60})
			errc <- err
		}()
		var victim int
		waitFor(t, "the call to be running", 20*time.Second, func() bool {
			for _, w := range health(t, rt, "p").Workers {
				if w.Load == 1 {
					victim = w.Pid
					return true
				}
			}
			return false
		})
		if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := <-errc
		var crash *snakepit.WorkerCrashedError
		if !errors.Is(err, snakepit.ErrWorkerCrashed) || !errors.As(err, &crash) {
			t.Fatalf("got %v, want ErrWorkerCrashed", err)
		}
		if crash.Signal() != syscall.SIGKILL {
			t.Fatalf("crash signal = %v, want SIGKILL (%v)", crash.Signal(), crash)
		}
		waitFor(t, "the pool to be back to full size", 20*time.Second, func() bool {
			h := health(t, rt, "p")
			return h.Ready == 2 && h.Workers[0].Pid != victim && h.Workers[1].Pid != victim
		})
		restarts := 0
		for _, w := range health(t, rt, "p").Workers {
			restarts += w.Restarts
		}
		if restarts != 1 {
			t.Fatalf("restarts = %d, want 1", restarts)
		}
		for i := 0; i < 4; i++ {
			if _, err := rt.Call(callCtx(t), "p", "echo", map[string]any{"value": i}); err != nil {
				t.Fatalf("after restart: %v", err)
			}
		}
	})
}

func TestQueueFullIsSaturated(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		p := pool(t, "p", "echo_tools", 1)
		p.QueueSize = 1
		rt, _ := start(t, p)
		ctx, cancel := context.WithCancel(callCtx(t))
		defer cancel()
		var wg sync.WaitGroup
		for i := 0; i < 2; i++ { // one runs, one waits in the queue
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = rt.Call(ctx, "p", "cooperative_loop", map[string]any{"seconds": 30})
			}()
		}
		waitFor(t, "one call running and one queued", 20*time.Second, func() bool {
			h := health(t, rt, "p")
			return h.InFlight == 1 && h.Queued == 1
		})
		_, err := rt.Call(callCtx(t), "p", "echo", nil)
		if !errors.Is(err, snakepit.ErrPoolSaturated) {
			t.Fatalf("got %v, want ErrPoolSaturated", err)
		}
		cancel()
		wg.Wait()
	})
}

func TestContextDeadline(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 1))
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := rt.Call(ctx, "p", "cooperative_loop", map[string]any{"seconds": 30})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want context.DeadlineExceeded", err)
		}
		done, cancelled := context.WithCancel(context.Background())
		cancelled()
		if _, err := rt.Call(done, "p", "echo", nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("already-cancelled context: got %v, want context.Canceled", err)
		}
	})
}

func TestImportErrorIsBootFailureWithoutRestartLoop(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		log, buf := testLogger(t)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, err := snakepit.Start(ctx, snakepit.Config{Logger: log, Pools: []snakepit.PoolConfig{
			pool(t, "ok", "echo_tools", 1), pool(t, "broken", "broken_import", 2)}})
		if !errors.Is(err, snakepit.ErrBootFailed) {
			t.Fatalf("got %v, want ErrBootFailed", err)
		}
		var boot *snakepit.BootError
		if !errors.As(err, &boot) || !strings.Contains(boot.Traceback, "not_installed_dependency") || boot.Type == "" {
			t.Fatalf("boot error lacks the Python traceback: %+v", boot)
		}
		if strings.Contains(buf.String(), "restarting worker") {
			t.Fatalf("a boot failure was restarted:\n%s", buf.String())
		}
	})
}

func TestStopLeavesNoProcess(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		log, _ := testLogger(t)
		ctx := callCtx(t)
		rt, err := snakepit.Start(ctx, snakepit.Config{Logger: log, Pools: []snakepit.PoolConfig{
			pool(t, "a", "echo_tools", 2), pool(t, "b", "examples.textstats", 1)}})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(processesOfRun(t, rt.RunID())); n != 3 {
			t.Fatalf("%d worker processes running, want 3", n)
		}
		if err := rt.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if left := processesOfRun(t, rt.RunID()); len(left) != 0 {
			t.Fatalf("processes left after Stop: %v", left)
		}
		if err := rt.Stop(ctx); err != nil {
			t.Fatalf("second Stop: %v", err)
		}
		if _, err := rt.Call(ctx, "a", "echo", nil); !errors.Is(err, snakepit.ErrStopped) {
			t.Fatalf("call after Stop: got %v, want ErrStopped", err)
		}
	})
}

func TestStopDrainsInFlightCalls(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		log, _ := testLogger(t)
		ctx := callCtx(t)
		rt, err := snakepit.Start(ctx, snakepit.Config{Logger: log, Pools: []snakepit.PoolConfig{pool(t, "p", "echo_tools", 1)}})
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := rt.Call(ctx, "p", "sleep", map[string]any{"seconds": 0.3})
			errc <- err
		}()
		waitFor(t, "the call to be running", 20*time.Second, func() bool { return health(t, rt, "p").InFlight == 1 })
		if err := rt.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("in-flight call during Stop: %v", err)
		}
	})
}

func TestMessageSizeLimit(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		log, _ := testLogger(t)
		ctx := callCtx(t)
		rt, err := snakepit.Start(ctx, snakepit.Config{Logger: log, MaxMessageBytes: 1 << 20,
			Pools: []snakepit.PoolConfig{pool(t, "p", "echo_tools", 1)}})
		if err != nil {
			t.Fatal(err)
		}
		defer rt.Stop(ctx)
		_, err = rt.Call(ctx, "p", "echo_bytes", map[string]any{"data": make([]byte, 2<<20)})
		if !errors.Is(err, snakepit.ErrMessageTooLarge) {
			t.Fatalf("oversized request: got %v, want ErrMessageTooLarge", err)
		}
		_, err = rt.Call(ctx, "p", "big", map[string]any{"n": 2 << 20})
		if !errors.Is(err, snakepit.ErrMessageTooLarge) {
			t.Fatalf("oversized reply: got %v, want ErrMessageTooLarge", err)
		}
		res, err := rt.Call(ctx, "p", "big", map[string]any{"n": 1000})
		if err != nil {
			t.Fatalf("worker unusable after oversized messages: %v", err)
		}
		if b, _ := res.Bytes(); len(b) != 1000 {
			t.Fatalf("big(1000) returned %d bytes", len(b))
		}
	})
}

func TestToolsAndStats(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "examples.textstats", 2))
		tools, err := rt.Tools(callCtx(t), "p")
		if err != nil {
			t.Fatal(err)
		}
		var wc *snakepit.Tool
		for i := range tools {
			if tools[i].Name == "word_count" {
				wc = &tools[i]
			}
		}
		if wc == nil || len(wc.Params) != 1 || wc.Params[0].Name != "text" || wc.Params[0].Annotation != "str" ||
			!wc.Params[0].Required || !strings.Contains(wc.Doc, "words") {
			t.Fatalf("word_count described as %+v", wc)
		}
		if _, err := rt.Call(callCtx(t), "p", "word_count", map[string]any{"text": "x"}); err != nil {
			t.Fatal(err)
		}
		stats, err := rt.Stats(callCtx(t), "p")
		if err != nil {
			t.Fatal(err)
		}
		h := health(t, rt, "p")
		if len(stats) != 2 {
			t.Fatalf("stats of %d workers, want 2", len(stats))
		}
		var served int64
		for i, s := range stats {
			if s.Pid != h.Workers[i].Pid || s.Python == "" || s.Capacity != 1 || s.RSSBytes <= 0 {
				t.Fatalf("stats[%d] = %+v (health %+v)", i, s, h.Workers[i])
			}
			served += s.RequestsServed
			// On the free-threaded build the GIL must really be off in the worker.
			if ft := transportOf(t).name == "native-3.13t"; s.FreeThreaded != ft || s.GILEnabled == ft {
				t.Fatalf("stats[%d]: free-threaded build %v, GIL enabled %v, on %s", i, s.FreeThreaded, s.GILEnabled, transportOf(t).name)
			}
		}
		if served != 1 {
			t.Fatalf("requests served = %d, want 1", served)
		}
		if _, err := rt.Tools(callCtx(t), "nope"); !errors.Is(err, snakepit.ErrUnknownPool) {
			t.Fatalf("Tools of unknown pool: %v", err)
		}
	})
}
