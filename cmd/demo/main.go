// Command demo shows the runtime at work: a pool of Python workers serving
// concurrent calls, a Python exception arriving as a Go error, and a worker
// killed with SIGKILL mid-run that its supervisor replaces.
//
// Run it from the repository root: make demo (or go run ./cmd/demo).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/term"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/telemetry"
)

func main() {
	root := flag.String("root", ".", "directory that holds the examples/ Python package")
	calls := flag.Int("calls", 2000, "calls in the concurrency step")
	flag.Parse()
	if err := run(*root, *calls); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(root string, calls int) error {
	dir, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	section("starting")
	t0 := time.Now()
	rt, err := snakepit.Start(ctx, snakepit.Config{
		Logger: hclog.New(&hclog.LoggerOptions{Name: "snakepit", Level: hclog.Warn}),
		Pools: []snakepit.PoolConfig{
			{Name: "text", Adapter: "examples.textstats", Size: 4, PythonPath: []string{dir}},
			{Name: "sentiment", Adapter: "examples.sentiment:SentimentModel", Size: 2, PythonPath: []string{dir}},
		},
	})
	if err != nil {
		return err
	}
	defer stop(rt)
	fmt.Printf("2 pools, 6 Python workers ready in %s\n", time.Since(t0).Round(time.Millisecond))

	steps := []func(context.Context, *snakepit.Runtime) error{
		firstCall, func(ctx context.Context, rt *snakepit.Runtime) error { return concurrent(ctx, rt, calls) },
		pythonError, classAdapter, streamsCallbacksSessions, killWorker, rollingRestart,
	}
	for _, step := range steps {
		if err := step(ctx, rt); err != nil {
			return err
		}
	}
	return summary(ctx, rt)
}

func section(title string) { fmt.Printf("\n== %s\n", title) }

func firstCall(ctx context.Context, rt *snakepit.Runtime) error {
	section("one call")
	res, err := rt.Call(ctx, "text", "word_count", map[string]any{"text": "the quick brown fox"})
	if err != nil {
		return err
	}
	var n int
	if err := res.Decode(&n); err != nil {
		return err
	}
	fmt.Printf("word_count(\"the quick brown fox\") = %d   (ran on %s)\n", n, res.Worker())
	return nil
}

func concurrent(ctx context.Context, rt *snakepit.Runtime, calls int) error {
	section(fmt.Sprintf("%d calls from 16 goroutines", calls))
	var mu sync.Mutex
	perWorker := map[string]int{}
	var firstErr error
	var wg sync.WaitGroup
	next := make(chan int)
	t0 := time.Now()
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				res, err := rt.Call(ctx, "text", "top_words", map[string]any{"text": strings.Repeat("go python go ", i%7+1), "n": 1})
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				} else if err == nil {
					perWorker[res.Worker()]++
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < calls; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	elapsed := time.Since(t0)
	fmt.Printf("%d calls in %s (%.0f calls/s), spread over the workers:\n", calls, elapsed.Round(time.Millisecond), float64(calls)/elapsed.Seconds())
	ids := make([]string, 0, len(perWorker))
	for id := range perWorker {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		fmt.Printf("  %-8s %5d\n", id, perWorker[id])
	}
	return nil
}

func pythonError(ctx context.Context, rt *snakepit.Runtime) error {
	section("a Python exception is a Go error")
	_, err := rt.Call(ctx, "text", "fail", map[string]any{"message": "no such word"})
	var pe *snakepit.PythonError
	if !errors.As(err, &pe) {
		return fmt.Errorf("expected a *snakepit.PythonError, got %v", err)
	}
	fmt.Printf("errors.As(err, *PythonError): type=%s message=%q\n", pe.Type, pe.Message)
	lines := strings.Split(strings.TrimSpace(pe.Traceback), "\n")
	fmt.Printf("traceback, last lines:\n    %s\n", strings.Join(lines[max(0, len(lines)-3):], "\n    "))
	_, err = rt.Call(ctx, "text", "no_such_tool", nil)
	fmt.Printf("unknown tool: errors.Is(err, ErrUnknownTool) = %v\n  %v\n", errors.Is(err, snakepit.ErrUnknownTool), err)
	return nil
}

func classAdapter(ctx context.Context, rt *snakepit.Runtime) error {
	section("a class adapter: the model loads once per worker")
	for _, text := range []string{"what a wonderful, excellent day", "this is terrible and boring"} {
		res, err := rt.Call(ctx, "sentiment", "score", map[string]any{"text": text})
		if err != nil {
			return err
		}
		var score float64
		_ = res.Decode(&score)
		fmt.Printf("score(%q) = %+.2f\n", text, score)
	}
	return nil
}

func streamsCallbacksSessions(ctx context.Context, rt *snakepit.Runtime) error {
	section("streams, callbacks and sessions")
	var got []string
	for chunk, err := range rt.Stream(ctx, "text", "words", map[string]any{"text": "streams flow one word at a time"}) {
		if err != nil {
			return err
		}
		var w string
		if err := chunk.Decode(&w); err != nil {
			return err
		}
		if got = append(got, w); len(got) == 3 {
			break // Python closes the generator, on its thread, before the loop ends
		}
	}
	fmt.Printf("stream of words, break after 3: %q\n", got)

	if err := rt.Register("shout", func(_ context.Context, a struct{ Word string }) (string, error) {
		return strings.ToUpper(a.Word) + "!", nil
	}, "text"); err != nil {
		return err
	}
	res, err := rt.Call(ctx, "text", "shout_words", map[string]any{"text": "python calls go"})
	if err != nil {
		return err
	}
	var shouted []string
	if err := res.Decode(&shouted); err != nil {
		return err
	}
	fmt.Printf("Python called the Go function \"shout\" per word: %q\n", shouted)

	s, err := rt.OpenSession(ctx, "text", snakepit.SessionOptions{Mode: snakepit.SessionStrict})
	if err != nil {
		return err
	}
	var n int
	for _, text := range []string{"first", "second", "third"} {
		res, err := s.Call(ctx, "note", map[string]any{"text": text})
		if err != nil {
			return err
		}
		if err := res.Decode(&n); err != nil {
			return err
		}
	}
	fmt.Printf("session %s on %s: its Python state holds %d notes\n", s.ID(), s.Worker(), n)
	return s.Close(ctx)
}

func killWorker(ctx context.Context, rt *snakepit.Runtime) error {
	section("SIGKILL a worker in the middle of a call")
	errc := make(chan error, 1)
	go func() {
		_, err := rt.Call(ctx, "text", "slow_word_count", map[string]any{"text": "never finishes", "delay": 30})
		errc <- err
	}()
	victim, err := busyWorker(ctx, rt)
	if err != nil {
		return err
	}
	fmt.Printf("killing %s (pid %d) with SIGKILL\n", victim.ID, victim.Pid)
	if err := syscall.Kill(victim.Pid, syscall.SIGKILL); err != nil {
		return err
	}
	callErr := <-errc
	fmt.Printf("the caller got: errors.Is(err, ErrWorkerCrashed) = %v\n  %v\n", errors.Is(callErr, snakepit.ErrWorkerCrashed), callErr)
	t0 := time.Now()
	for {
		h, err := poolHealth(ctx, rt, "text")
		if err != nil {
			return err
		}
		if h.Ready == h.Size {
			for _, w := range h.Workers {
				if w.ID == victim.ID {
					fmt.Printf("supervisor restored the pool in %s: %s is pid %d now, %d/%d workers ready\n",
						time.Since(t0).Round(time.Millisecond), w.ID, w.Pid, h.Ready, h.Size)
				}
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	res, err := rt.Call(ctx, "text", "word_count", map[string]any{"text": "back in business"})
	if err != nil {
		return err
	}
	var n int
	_ = res.Decode(&n)
	fmt.Printf("next call: word_count = %d on %s\n", n, res.Worker())
	return nil
}

func busyWorker(ctx context.Context, rt *snakepit.Runtime) (snakepit.WorkerHealth, error) {
	for {
		h, err := poolHealth(ctx, rt, "text")
		if err != nil {
			return snakepit.WorkerHealth{}, err
		}
		for _, w := range h.Workers {
			if w.Load > 0 {
				return w, nil
			}
		}
		select {
		case <-ctx.Done():
			return snakepit.WorkerHealth{}, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func poolHealth(ctx context.Context, rt *snakepit.Runtime, name string) (snakepit.PoolHealth, error) {
	hs, err := rt.Health(ctx)
	if err != nil {
		return snakepit.PoolHealth{}, err
	}
	for _, h := range hs {
		if h.Name == name {
			return h, nil
		}
	}
	return snakepit.PoolHealth{}, fmt.Errorf("no pool %q", name)
}

// summary prints the inspector's report: every pool and worker, its
// saturation and the recommendations (docs/inspector.md).
func summary(ctx context.Context, rt *snakepit.Runtime) error {
	section("inspector report")
	rep, err := rt.Inspect(ctx)
	if err != nil {
		return err
	}
	color := os.Getenv("NO_COLOR") == "" && term.IsTerminal(int(os.Stdout.Fd()))
	return telemetry.RenderTable(os.Stdout, rep, telemetry.TableOptions{Detailed: true, Recommendations: true, Color: color})
}

// rollingRestart replaces every worker of the text pool while calls go on.
func rollingRestart(ctx context.Context, rt *snakepit.Runtime) error {
	section("rolling restart")
	var calls, failed atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := rt.Call(ctx, "text", "word_count", map[string]any{"text": "a b c"}); err != nil {
				failed.Add(1)
			}
			calls.Add(1)
		}
	}()
	t0 := time.Now()
	err := rt.RecycleAll(ctx, "text")
	close(done)
	wg.Wait()
	if err != nil {
		return err
	}
	fmt.Printf("replaced all 4 text workers, one at a time, in %s; %d calls meanwhile, %d failed\n",
		time.Since(t0).Round(time.Millisecond), calls.Load(), failed.Load())
	return nil
}

func stop(rt *snakepit.Runtime) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := rt.Stop(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "stop:", err)
		return
	}
	fmt.Printf("\nstopped in %s; no worker process left\n", time.Since(t0).Round(time.Millisecond))
}
