package snakepit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/telemetry"
)

// One caller's bad argument must cost that caller's call and nothing else:
// not the connection, not the worker, not the pool. These calls nest JSON
// deeper than a worker's decoder goes, or hold values it refuses, on a pool
// of one worker that may restart only once: before the fix each of them
// made the native worker's reader fail, the runtime killed the worker, and
// the second one failed the pool.

// depthEnv is a pool "d" of one depth_tools worker with a restart intensity
// of 1, whose worker.crashed and worker.restarted events are counted.
type depthEnv struct {
	rt  *snakepit.Runtime
	pid int

	mu     sync.Mutex
	deaths []string
}

func startDepthEnv(t *testing.T, register func(t *testing.T, rt *snakepit.Runtime)) *depthEnv {
	t.Helper()
	p := pool(t, "d", "depth_tools", 1)
	p.Restart.MaxRestarts, p.Restart.Period = 1, time.Minute
	rt, _ := start(t, p)
	e := &depthEnv{rt: rt}
	sub := rt.Subscribe(func(ev telemetry.Event) {
		if name := ev.EventName(); name == "worker.crashed" || name == "worker.restarted" {
			e.mu.Lock()
			e.deaths = append(e.deaths, fmt.Sprintf("%s %+v", name, ev))
			e.mu.Unlock()
		}
	})
	t.Cleanup(sub.Close)
	if register != nil {
		register(t, rt)
	}
	e.pid = e.workerPid(t)
	return e
}

// workerPid asks the worker itself.
func (e *depthEnv) workerPid(t *testing.T) int {
	t.Helper()
	res, err := e.rt.Call(callCtx(t), "d", "pid", nil)
	if err != nil {
		t.Fatalf("pid: %v", err)
	}
	var pid int
	if err := res.Decode(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// unharmed: the same worker process serves a normal call, the pool never
// restarted it, and no worker died.
func (e *depthEnv) unharmed(t *testing.T) {
	t.Helper()
	if pid := e.workerPid(t); pid != e.pid {
		t.Fatalf("the worker was replaced: pid %d, was %d", pid, e.pid)
	}
	res, err := e.rt.Call(callCtx(t), "d", "echo", map[string]any{"value": "still here"})
	var got string
	if err != nil || res.Decode(&got) != nil || got != "still here" {
		t.Fatalf("echo after the bad call: %q, %v", got, err)
	}
	h := health(t, e.rt, "d")
	if h.Failed || h.Ready != 1 || h.Restarts != 0 || h.Workers[0].Pid != e.pid {
		t.Fatalf("the pool changed: %+v", h)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.deaths) > 0 {
		t.Fatalf("workers died: %v", e.deaths)
	}
}

func nestedList(depth int) any {
	var v any = 0
	for range depth {
		v = []any{v}
	}
	return v
}

func nestedRaw(depth int) json.RawMessage {
	return json.RawMessage(strings.Repeat("[", depth) + "0" + strings.Repeat("]", depth))
}

func nestedMap(depth int) any {
	var v any = "leaf"
	for range depth {
		v = map[string]any{"k": v}
	}
	return v
}

// wantBadArgs: err is ErrBadArguments, no other sentinel, and says each of says.
func wantBadArgs(t *testing.T, err error, says ...string) {
	t.Helper()
	if !errors.Is(err, snakepit.ErrBadArguments) {
		t.Fatalf("got %v (%T), want ErrBadArguments", err, err)
	}
	for _, s := range []error{snakepit.ErrTransport, snakepit.ErrWorkerCrashed, snakepit.ErrPoolUnavailable} {
		if errors.Is(err, s) {
			t.Fatalf("a bad argument matches %v: %v", s, err)
		}
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q:\n%.600s", s, err)
		}
	}
}

var depthLimitSays = []string{"512 levels", "snakepit.MaxArgsDepth"}

// TestOneCallsInputHarmsNoOther: input no worker can take (nested too
// deep, not UTF-8, numbers Python refuses, a deadline past 2262, callback
// answers the worker cannot decode) fails only the call, stream or callback
// it came with. The cases share one runtime per transport, in turn: after
// each, the same worker process serves a normal call and none died
// (depthEnv.unharmed), so a case that harmed the worker fails there.
func TestOneCallsInputHarmsNoOther(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		e := startDepthEnv(t, registerDepthCallbacks)
		for _, c := range []struct {
			name string
			run  func(*testing.T, *depthEnv)
		}{
			{"DeepArgumentsFailOnlyTheirCall", depthDeepArgumentsFailOnlyTheirCall},
			{"ArgumentsAtMaxArgsDepthArrive", depthArgumentsAtMaxArgsDepthArrive},
			{"ValuesPythonRefusesFailOnlyTheirCall", depthValuesPythonRefusesFailOnlyTheirCall},
			{"BadToolNamesFailOnlyTheirCall", depthBadToolNamesFailOnlyTheirCall},
			{"LoneSurrogatesInErrors", depthLoneSurrogatesInErrors},
			{"DeepCallbackResultFailsOnlyThatCallback", depthDeepCallbackResultFailsOnlyThatCallback},
			{"DeepValuesFromPython", depthDeepValuesFromPython},
			{"RawJSONNotUTF8FailsOnlyItsCall", depthRawJSONNotUTF8FailsOnlyItsCall},
			{"FarDeadlineIsKept", depthFarDeadlineIsKept},
			{"CallbackErrorNotUTF8KeepsCallbacks", depthCallbackErrorNotUTF8KeepsCallbacks},
		} {
			t.Run(c.name, func(t *testing.T) {
				c.run(t, e)
				e.unharmed(t)
			})
		}
	})
}

// registerDepthCallbacks registers the Go handlers the cases call.
func registerDepthCallbacks(t *testing.T, rt *snakepit.Runtime) {
	t.Helper()
	for name, handler := range map[string]any{
		"deep":     func(context.Context, struct{}) (any, error) { return nestedList(100_000), nil },
		"huge_int": func(context.Context, struct{}) (any, error) { return json.Number(strings.Repeat("7", 5_000)), nil },
		"sink":     func(context.Context, map[string]any) (string, error) { return "took it", nil },
		"one":      func(context.Context, struct{}) (int, error) { return 1, nil },
		"bad":      func(context.Context, struct{}) (int, error) { return 0, errors.New("bad \xff bytes") },
	} {
		if err := rt.Register(name, handler); err != nil {
			t.Fatal(err)
		}
	}
}

// depthDeepArgumentsFailOnlyTheirCall: arguments nested deeper than
// MaxArgsDepth fail with ErrBadArguments naming the limit, as plain calls,
// streams and session calls, however they were built; the worker lives on.
func depthDeepArgumentsFailOnlyTheirCall(t *testing.T, e *depthEnv) {
	deep := map[string]any{
		"100,000 nested []any":            map[string]any{"value": nestedList(100_000)},
		"100,000 nested json.RawMessage":  map[string]any{"value": nestedRaw(100_000)},
		"5,000 nested json.RawMessage":    map[string]any{"value": nestedRaw(5_000)},
		"1,000 nested maps":               map[string]any{"value": nestedMap(1_000)},
		"the args themselves, 600 deep":   json.RawMessage(`{"value":` + string(nestedRaw(599)) + `}`),
		"one level over MaxArgsDepth":     map[string]any{"value": nestedList(snakepit.MaxArgsDepth)},
		"deep, beside binary arguments":   map[string]any{"value": nestedList(2_000), "data": []byte("raw")},
		"brackets in strings do not hide": map[string]any{"s": strings.Repeat("[", 2_000), "value": nestedList(1_000)},
	}
	for name, args := range deep {
		_, err := e.rt.Call(callCtx(t), "d", "echo", args)
		wantBadArgs(t, err, append(depthLimitSays, "d.echo")...)
		t.Logf("%s: %v", name, err)
	}
	for _, err := range e.rt.Stream(callCtx(t), "d", "count", map[string]any{"n": nestedList(10_000)}) {
		wantBadArgs(t, err, depthLimitSays...)
	}
	s, err := e.rt.OpenSession(callCtx(t), "d", snakepit.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(callCtx(t))
	_, err = s.Call(callCtx(t), "session_id", map[string]any{"value": nestedList(10_000)})
	wantBadArgs(t, err, depthLimitSays...)
}

// depthArgumentsAtMaxArgsDepthArrive: the limit is not off by one: the
// arguments object plus MaxArgsDepth-1 nested lists reach the tool whole.
func depthArgumentsAtMaxArgsDepthArrive(t *testing.T, e *depthEnv) {
	sent := nestedList(snakepit.MaxArgsDepth - 1)
	res, err := e.rt.Call(callCtx(t), "d", "echo", map[string]any{"value": sent})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(sent)
	if string(res.JSON()) != string(want) {
		t.Fatalf("echo returned %.80s..., want %.80s...", res.JSON(), want)
	}
}

// depthValuesPythonRefusesFailOnlyTheirCall: well-formed JSON that Python's
// decoder refuses (an integer of more digits than it converts) fails the
// call with ErrBadArguments saying why; before the fix the native worker's
// reader took it for a bad frame and the worker was killed.
func depthValuesPythonRefusesFailOnlyTheirCall(t *testing.T, e *depthEnv) {
	for range 3 { // more than the restart intensity allows
		_, err := e.rt.Call(callCtx(t), "d", "echo", map[string]any{"value": json.Number(strings.Repeat("9", 5_000))})
		wantBadArgs(t, err, "4300 digits", "set_int_max_str_digits")
	}
}

// depthBadToolNamesFailOnlyTheirCall: a tool name that is not UTF-8 is an
// unknown tool; over gRPC it used to fail to marshal, which the runtime
// took for a broken connection and killed the worker.
func depthBadToolNamesFailOnlyTheirCall(t *testing.T, e *depthEnv) {
	for _, tool := range []string{"\xff", "ech\xc3", "echo\x00"} {
		_, err := e.rt.Call(callCtx(t), "d", tool, nil)
		if !errors.Is(err, snakepit.ErrUnknownTool) || errors.Is(err, snakepit.ErrTransport) {
			t.Fatalf("tool %q: %v, want ErrUnknownTool", tool, err)
		}
	}
}

// depthLoneSurrogatesInErrors: JSON may carry a lone surrogate ("\ud800"),
// which a Python str holds but protobuf cannot send: an error message
// quoting one (an unknown argument name, a tool's exception) arrives
// escaped and typed, not as an internal error of the gRPC server.
func depthLoneSurrogatesInErrors(t *testing.T, e *depthEnv) {
	_, err := e.rt.Call(callCtx(t), "d", "echo", json.RawMessage(`{"\ud800":1}`))
	wantBadArgs(t, err, "unexpected keyword argument")
	_, err = e.rt.Call(callCtx(t), "d", "raise_message", json.RawMessage(`{"message":"x\udfff"}`))
	var pe *snakepit.PythonError
	if !errors.As(err, &pe) || pe.Type != "builtins.ValueError" || !strings.Contains(pe.Message, "x") {
		t.Fatalf("got %v, want the tool's ValueError", err)
	}
}

// depthDeepCallbackResultFailsOnlyThatCallback: a Go callback handler whose
// result nests deeper than the worker's decoder goes makes snakepit.call
// raise CallbackError BAD_REPLY in the tool; the connection and the worker
// stay. Before the fix the native worker's reader died on it (the worker
// was killed) and over gRPC the callback was never answered.
func depthDeepCallbackResultFailsOnlyThatCallback(t *testing.T, e *depthEnv) {
	for _, name := range []string{"deep", "huge_int", "deep"} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := e.rt.Call(ctx, "d", "callback_result", map[string]any{"name": name})
		cancel()
		if err != nil {
			t.Fatalf("callback %s: %v", name, err)
		}
		var got struct{ Kind, Message string }
		if err := res.Decode(&got); err != nil || got.Kind != "BAD_REPLY" || !strings.Contains(got.Message, "cannot be decoded") {
			t.Fatalf("callback %s: %+v %v, want BAD_REPLY", name, got, err)
		}
	}
}

// depthDeepValuesFromPython: a tool may nest deeper than Go's encoding/json
// decodes (10,000 levels; a raised recursion limit lets CPython 3.11 encode
// it). As callback arguments they fail that callback alone (CallbackError
// BAD_ARGUMENTS; the native reader took them for a bad frame before); as a
// result the call succeeds and only Result.Decode says so.
func depthDeepValuesFromPython(t *testing.T, e *depthEnv) {
	res, err := e.rt.Call(callCtx(t), "d", "deep_callback", map[string]any{"name": "sink", "depth": 20_000})
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Kind, Message string }
	if err := res.Decode(&got); err != nil {
		t.Fatal(err)
	}
	switch got.Kind {
	case "BAD_ARGUMENTS": // sent, and refused by Go (natively when parsed, over gRPC when decoded)
		if !strings.Contains(got.Message, "10000 levels") && !strings.Contains(got.Message, "exceeded max depth") {
			t.Fatalf("the refusal does not name the limit: %+v", got)
		}
	case "UNENCODABLE": // CPython 3.13 cannot encode 20,000 levels: nothing was sent
	default:
		t.Fatalf("deep_callback: %+v", got)
	}
	res, err = e.rt.Call(callCtx(t), "d", "deep_result", map[string]any{"depth": 20_000})
	switch {
	case err == nil:
		var v any
		if err := res.Decode(&v); err == nil || !strings.Contains(err.Error(), "exceeded max depth") {
			t.Fatalf("Decode of a 20,000-deep result: %v", err)
		}
	case !errors.Is(err, snakepit.ErrUnencodableResult): // CPython 3.13
		t.Fatalf("deep_result: %v", err)
	}
}

// depthRawJSONNotUTF8FailsOnlyItsCall: encoding/json copies a
// json.RawMessage's bytes as they are, invalid UTF-8 included; the native
// worker read such a meta as a bad frame and the worker was killed. It is
// refused before sending, with ErrBadArguments.
func depthRawJSONNotUTF8FailsOnlyItsCall(t *testing.T, e *depthEnv) {
	for _, raw := range []string{"\"caf\xe9\"", "{\"k\xff\":1}"} {
		_, err := e.rt.Call(callCtx(t), "d", "echo", map[string]any{"value": json.RawMessage(raw)})
		wantBadArgs(t, err, "is not valid UTF-8")
	}
}

// depthFarDeadlineIsKept: a context deadline past what int64 Unix
// nanoseconds hold (context.WithTimeout(ctx, math.MaxInt64): the year
// 2317) is sent as the latest one the protocol carries. time.Time.UnixNano
// overflowed: the call failed at once with a deadline long past, and the
// native worker read the negative deadline as a bad frame and was killed.
func depthFarDeadlineIsKept(t *testing.T, e *depthEnv) {
	ctx, cancel := context.WithTimeout(context.Background(), math.MaxInt64)
	defer cancel()
	if _, err := e.rt.Call(ctx, "d", "echo", map[string]any{"value": 1}); err != nil {
		t.Fatalf("call: %v", err)
	}
	res, err := e.rt.Call(ctx, "d", "callback_result", map[string]any{"name": "one"})
	var got struct{ Kind string }
	if err != nil || res.Decode(&got) != nil || got.Kind != "OK" {
		t.Fatalf("callback: %+v, %v", got, err)
	}
	n := 0
	for _, err := range e.rt.Stream(ctx, "d", "count", map[string]any{"n": 3}) {
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("stream: %d chunks, want 3", n)
	}
}

// depthCallbackErrorNotUTF8KeepsCallbacks: a Go handler's error text may
// hold any bytes; protobuf strings may not. Over gRPC the reply failed to
// send, which ended the worker's Callbacks stream: that callback and every
// later one failed. Now the text arrives with U+FFFD for the bad bytes (as
// the native transport's JSON writes them) and callbacks go on.
func depthCallbackErrorNotUTF8KeepsCallbacks(t *testing.T, e *depthEnv) {
	for _, c := range []struct{ name, kind, says string }{{"bad", "HANDLER_ERROR", "bad \uFFFD bytes"}, {"one", "OK", ""}} {
		res, err := e.rt.Call(callCtx(t), "d", "callback_result", map[string]any{"name": c.name})
		var got struct{ Kind, Message string }
		if err != nil || res.Decode(&got) != nil || got.Kind != c.kind || !strings.Contains(got.Message, c.says) {
			t.Fatalf("callback %s: %+v, %v; want kind %s saying %q", c.name, got, err, c.kind, c.says)
		}
	}
}
