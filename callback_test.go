package snakepit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
)

func decodeAs[T any](t *testing.T, r *snakepit.Result) T {
	t.Helper()
	var v T
	if err := r.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestCallbackRoundTrip: Python calls a Go function with nested data and
// gets it back unchanged, from a sync tool and from an async one.
func TestCallbackRoundTrip(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 1))
		var calls atomic.Int64
		if err := rt.Register("mirror", func(_ context.Context, args map[string]any) (map[string]any, error) {
			calls.Add(1)
			return args, nil
		}); err != nil {
			t.Fatal(err)
		}
		nested := map[string]any{"a": []any{1.0, "two", map[string]any{"three": []any{true, nil}}}, "é": "ü", "n": 1e300}
		for _, tool := range []string{"callback", "acallback"} {
			r, err := rt.Call(callCtx(t), "p", tool, map[string]any{"name": "mirror", "args": nested})
			if err != nil {
				t.Fatalf("%s: %v", tool, err)
			}
			if got := decodeAs[map[string]any](t, r); !reflect.DeepEqual(got, nested) {
				t.Fatalf("%s: got %#v, want %#v", tool, got, nested)
			}
		}
		if calls.Load() != 2 {
			t.Fatalf("the handler ran %d times, want 2", calls.Load())
		}
	})
}

// TestCallbackBytesAreExact: 10 MB of bytes go to Go and back raw, byte
// for byte, into a struct field.
func TestCallbackBytesAreExact(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 1))
		data := make([]byte, 10<<20)
		for i := range data {
			data[i] = byte(i*7 + i>>11)
		}
		if err := rt.Register("reverse", func(_ context.Context, args struct{ Data []byte }) ([]byte, error) {
			out := make([]byte, len(args.Data))
			for i, b := range args.Data {
				out[len(out)-1-i] = b
			}
			return out, nil
		}); err != nil {
			t.Fatal(err)
		}
		r, err := rt.Call(callCtx(t), "p", "callback_bytes", map[string]any{"name": "reverse", "data": data})
		if err != nil {
			t.Fatal(err)
		}
		got, ok := r.Bytes()
		if !ok || len(got) != len(data) {
			t.Fatalf("got %d bytes (raw %v), want %d", len(got), ok, len(data))
		}
		for i := range data {
			if got[len(got)-1-i] != data[i] {
				t.Fatalf("byte %d differs", i)
			}
		}
	})
}

// TestCallbackContextFollowsTheCall: the handler's context carries the
// calling call's deadline, and ends when that call's deadline passes.
func TestCallbackContextFollowsTheCall(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 1))
		if err := rt.Register("deadline", func(ctx context.Context, _ map[string]any) (int64, error) {
			dl, ok := ctx.Deadline()
			if !ok {
				return 0, errors.New("no deadline")
			}
			return dl.UnixNano(), nil
		}); err != nil {
			t.Fatal(err)
		}
		ended := make(chan error, 1)
		if err := rt.Register("wait", func(ctx context.Context, _ map[string]any) (any, error) {
			<-ctx.Done()
			ended <- ctx.Err()
			return nil, ctx.Err()
		}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(callCtx(t), 7*time.Second)
		defer cancel()
		want, _ := ctx.Deadline()
		r, err := rt.Call(ctx, "p", "callback", map[string]any{"name": "deadline", "args": map[string]any{}})
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeAs[int64](t, r); got != want.UnixNano() {
			t.Fatalf("handler deadline %s, call deadline %s", time.Unix(0, got), want)
		}
		short, cancel2 := context.WithTimeout(callCtx(t), 300*time.Millisecond)
		defer cancel2()
		if _, err := rt.Call(short, "p", "callback", map[string]any{"name": "wait", "args": map[string]any{}}); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("call: got %v, want DeadlineExceeded", err)
		}
		select {
		case err := <-ended:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("the handler's context ended with %v, want the deadline", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the handler's context did not end with the call's deadline")
		}
	})
}

// TestCallbackFailuresReachPython: a handler's error, a panic and an
// unknown name each arrive in Python as snakepit.CallbackError, and the Go
// program goes on.
func TestCallbackFailuresReachPython(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 1), pool(t, "other", "echo_tools", 1))
		must(t, rt.Register("fails", func(context.Context, map[string]any) (any, error) { return nil, errors.New("no such order 42") }))
		must(t, rt.Register("panics", func(context.Context, map[string]any) (any, error) { panic("handler bug") }))
		must(t, rt.Register("typed", func(_ context.Context, a struct{ N int }) (int, error) { return a.N * 2, nil }))
		must(t, rt.Register("elsewhere", func(context.Context, map[string]any) (any, error) { return 1, nil }, "other"))
		cases := []struct {
			name string
			args map[string]any
			want []string
		}{
			{"fails", map[string]any{}, []string{"CallbackError", "HANDLER_ERROR", "no such order 42"}},
			{"panics", map[string]any{}, []string{"CallbackError", "HANDLER_PANIC", "handler bug"}},
			{"typed", map[string]any{"N": "not a number"}, []string{"CallbackError", "BAD_ARGUMENTS"}},
			{"nope", map[string]any{}, []string{"UNKNOWN_CALLBACK", `"nope"`, "exposed: fails, panics, typed"}},
			{"elsewhere", map[string]any{}, []string{"UNKNOWN_CALLBACK", "exposed: fails, panics, typed"}},
		}
		for _, c := range cases {
			_, err := rt.Call(callCtx(t), "p", "callback", map[string]any{"name": c.name, "args": c.args})
			var pe *snakepit.PythonError
			if !errors.As(err, &pe) {
				t.Fatalf("%s: got %v, want a *PythonError", c.name, err)
			}
			for _, w := range c.want {
				if !strings.Contains(pe.Type+": "+pe.Message, w) {
					t.Errorf("%s: %s: %s does not mention %q", c.name, pe.Type, pe.Message, w)
				}
			}
		}
		r, err := rt.Call(callCtx(t), "other", "callback", map[string]any{"name": "elsewhere", "args": map[string]any{}})
		if err != nil || decodeAs[int](t, r) != 1 {
			t.Fatalf("a callback exposed to its pool: %v", err)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestCallbacksConcurrentFromThreads: 100 calls at once on a thread-profile
// worker each make a callback; all 100 handlers run at once, and every
// answer reaches the call that asked.
func TestCallbacksConcurrentFromThreads(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		defer checkNoLeaks(t)()
		const n = 100
		p := pool(t, "p", "flow_tools", 1)
		p.Profile, p.ThreadsPerWorker = "thread", n
		rt := startStoppable(t, p)
		var inside atomic.Int64
		all := make(chan struct{})
		var once sync.Once
		must(t, rt.Register("double", func(ctx context.Context, a struct{ I int }) (int, error) {
			if inside.Add(1) == n {
				once.Do(func() { close(all) })
			}
			select { // every handler waits until all n are running at once
			case <-all:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			return a.I * 2, nil
		}))
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := rt.Call(callCtx(t), "p", "relay", map[string]any{"name": "double", "i": i})
				if err != nil {
					errs <- err
					return
				}
				var got int
				_ = r.Decode(&got)
				if got != 2*i {
					errs <- fmt.Errorf("call %d got %d: another call's answer", i, got)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		must(t, rt.Stop(callCtx(t)))
	})
}

// TestCallbackIntoItsOwnBusyWorkerFails: a handler that calls back into the
// pool whose only worker is waiting for it gets ErrDeadlock at once,
// instead of waiting for ever.
func TestCallbackIntoItsOwnBusyWorkerFails(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 1), pool(t, "q", "echo_tools", 1))
		inner := make(chan error, 2)
		must(t, rt.Register("reenter", func(ctx context.Context, a struct{ Pool string }) (any, error) {
			r, err := rt.Call(ctx, a.Pool, "echo", map[string]any{"value": "inner"})
			inner <- err
			if err != nil {
				return nil, err
			}
			var v any
			return v, r.Decode(&v)
		}))
		_, err := rt.Call(callCtx(t), "p", "callback", map[string]any{"name": "reenter", "args": map[string]any{"Pool": "p"}})
		var pe *snakepit.PythonError
		if !errors.As(err, &pe) || !strings.Contains(pe.Message, "DEADLOCK") {
			t.Fatalf("got %v, want a Python CallbackError of kind DEADLOCK", err)
		}
		if ie := <-inner; !errors.Is(ie, snakepit.ErrDeadlock) {
			t.Fatalf("the handler's call got %v, want ErrDeadlock", ie)
		}
		// Into another pool it works.
		r, err := rt.Call(callCtx(t), "p", "callback", map[string]any{"name": "reenter", "args": map[string]any{"Pool": "q"}})
		if err != nil || decodeAs[string](t, r) != "inner" {
			t.Fatalf("callback into another pool: %v", err)
		}
	})
}

// TestRegisterRefusesBadHandlers: the handler's shape is checked when it is
// registered, with an error that says what is expected.
func TestRegisterRefusesBadHandlers(t *testing.T) {
	rt, _ := start(t, pool(t, "p", "echo_tools", 1))
	cases := map[string]struct {
		name    string
		handler any
		pools   []string
	}{
		"nil":           {"a", nil, nil},
		"not a func":    {"a", 42, nil},
		"no context":    {"a", func(int) (int, error) { return 0, nil }, nil},
		"no error":      {"a", func(context.Context, int) int { return 0 }, nil},
		"one result":    {"a", func(context.Context, int) error { return nil }, nil},
		"nil func":      {"a", (func(context.Context, int) (int, error))(nil), nil},
		"variadic":      {"a", func(context.Context, ...int) (int, error) { return 0, nil }, nil},
		"empty name":    {"", func(context.Context, int) (int, error) { return 0, nil }, nil},
		"spaced name":   {" a", func(context.Context, int) (int, error) { return 0, nil }, nil},
		"unknown pool":  {"a", func(context.Context, int) (int, error) { return 0, nil }, []string{"nope"}},
		"registered":    {"dup", func(context.Context, int) (int, error) { return 0, nil }, nil},
		"second of two": {"dup", func(context.Context, int) (int, error) { return 0, nil }, nil},
	}
	must(t, rt.Register("dup", func(context.Context, int) (int, error) { return 0, nil }))
	for what, c := range cases {
		err := rt.Register(c.name, c.handler, c.pools...)
		switch {
		case what == "unknown pool":
			if !errors.Is(err, snakepit.ErrUnknownPool) {
				t.Errorf("%s: got %v", what, err)
			}
		case !errors.Is(err, snakepit.ErrBadCallback):
			t.Errorf("%s: got %v, want ErrBadCallback", what, err)
		}
	}
	if err := rt.Register("ok", func(context.Context, []byte) ([]byte, error) { return nil, nil }, "p"); err != nil {
		t.Fatal(err)
	}
}

// TestCallbackDeadlineIsADeadline: when the call's deadline passes while a
// Go handler runs, the handler's context ends with DeadlineExceeded (the
// caller's cancel, sent as its own deadline passes, used to beat the
// worker's timer and end it Canceled) and the waiting tool, sync or async,
// gets snakepit.Cancelled saying deadline — every time, whichever side
// notices first (it used to get CallbackError CANCELLED at times).
func TestCallbackDeadlineIsADeadline(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 1))
		ended := make(chan error, 1)
		must(t, rt.Register("wait", func(ctx context.Context, _ map[string]any) (any, error) {
			<-ctx.Done()
			ended <- ctx.Err()
			return nil, ctx.Err()
		}))
		dir := t.TempDir()
		for i := 0; i < 8; i++ {
			tool := []string{"callback_caught", "acallback_caught"}[i%2]
			path := filepath.Join(dir, fmt.Sprintf("caught-%d.json", i))
			ctx, cancel := context.WithTimeout(callCtx(t), 300*time.Millisecond)
			_, err := rt.Call(ctx, "p", tool, map[string]any{"name": "wait", "path": path})
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%s #%d: got %v, want DeadlineExceeded", tool, i, err)
			}
			select {
			case err := <-ended:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("%s #%d: the handler's context ended with %v, want DeadlineExceeded", tool, i, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s #%d: the handler did not run, or its context did not end with the call", tool, i)
			}
			var caught struct {
				Type             string `json:"type"`
				DeadlineExceeded *bool  `json:"deadline_exceeded"`
				Message          string `json:"message"`
			}
			waitFor(t, "the tool to record what it caught", 10*time.Second, func() bool {
				data, err := os.ReadFile(path)
				return err == nil && json.Unmarshal(data, &caught) == nil
			})
			if caught.Type != "Cancelled" || caught.DeadlineExceeded == nil || !*caught.DeadlineExceeded {
				t.Fatalf("%s #%d: the tool caught %+v, want snakepit.Cancelled with deadline_exceeded", tool, i, caught)
			}
		}
	})
}
