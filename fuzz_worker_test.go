package snakepit_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/snakepit-go/snakepit"
)

// FuzzWorkerCall drives real Python workers (the depth_tools adapter; one
// per transport, started once per fuzz process) with calls built from
// fuzzed bytes: tool names, argument JSON (as a json.RawMessage, alone or
// as one argument), a binary argument, a stream window, a session, and the
// JSON a Go callback handler answers the tool with. Whatever the input, the
// call ends with a result or a typed per-call error, and afterwards the
// same worker process answers a normal call: no input may cost the
// connection, the worker or the pool. Seeds run with every `go test`;
// `make fuzz` fuzzes it.
func FuzzWorkerCall(f *testing.F) {
	for _, s := range workerFuzzSeeds() {
		for pool := range uint8(3) { // the third is the free-threaded one, when there is one
			f.Add(s.mode<<2|pool, s.tool, s.args, s.binName, s.bin, s.window, s.reply, s.ttl)
		}
	}
	w := startFuzzWorkers(f)
	f.Fuzz(func(t *testing.T, pick uint8, tool string, args []byte, binName string, bin []byte, window int, reply []byte, ttl int64) {
		pool, mode := w.pools[int(pick&3)%len(w.pools)], (pick>>2)%6
		ctx, cancel := fuzzCallContext(ttl)
		defer cancel()
		err := w.call(ctx, pool, mode, tool, args, binName, bin, window, reply)
		if !perCallError(err) {
			t.Fatalf("pool %s, mode %d, tool %q, args %.200q: %v (%T), want a result or a per-call error",
				pool, mode, tool, args, err, err)
		}
		w.stillServes(t, pool)
	})
}

type workerFuzzSeed struct {
	mode    uint8
	tool    string
	args    []byte
	binName string
	bin     []byte
	window  int
	reply   []byte
	ttl     int64 // the call's timeout, when over 20 s
}

func workerFuzzSeeds() []workerFuzzSeed {
	deep := func(n int) []byte { return []byte(strings.Repeat("[", n) + "0" + strings.Repeat("]", n)) }
	return []workerFuzzSeed{
		{mode: 1, tool: "echo", args: []byte(`{"a":[1,2,{"b":null}]}`)},
		{mode: 1, tool: "echo", args: []byte(`1`), ttl: math.MaxInt64},
		{mode: 2, tool: "count", args: []byte(`{"n":2}`), ttl: int64(290 * 365 * 24 * time.Hour)},
		{mode: 3, tool: "callback_result", reply: []byte(`1`), ttl: math.MaxInt64},
		{mode: 1, tool: "echo", args: deep(100_000)},
		{mode: 0, tool: "echo", args: []byte(`{"value":` + string(deep(5_000)) + `}`)},
		{mode: 1, tool: "echo", args: []byte(strings.Repeat("9", 5_000))},
		{mode: 1, tool: "echo", args: []byte(`1e999999`)},
		{mode: 1, tool: "echo", args: []byte(`NaN`)},
		{mode: 1, tool: "echo", args: []byte("\"caf\xe9\"")},
		{mode: 1, tool: "echo", args: []byte(`"\ud800"`)},
		{mode: 0, tool: "echo", args: []byte(`{"\udfff":1}`)},
		{mode: 0, tool: "echo", args: []byte(`{"value":1,"value":2}`)},
		{mode: 0, tool: "echo", args: []byte(`{"value":1}`), binName: "value", bin: []byte("clash")},
		{mode: 0, tool: "echo_bytes", args: []byte(`{}`), binName: "data", bin: []byte{0, 0xff, 0xfe}},
		{mode: 0, tool: "echo_bytes", args: []byte(`{}`), binName: "", bin: []byte("x")},
		{mode: 0, tool: "", args: []byte(`{}`)},
		{mode: 0, tool: "\xff\xfe", args: []byte(`{}`)},
		{mode: 0, tool: "no such tool", args: []byte(`{`)},
		{mode: 0, tool: "raise_message", args: []byte(`{"message":"x\ud800y"}`)},
		{mode: 2, tool: "count", args: []byte(`{"n":3}`), window: 1},
		{mode: 2, tool: "count", args: []byte(`{"n":` + string(deep(10_000)) + `}`), window: 2},
		{mode: 2, tool: "count", args: []byte(`{"n":2}`), window: -1},
		{mode: 2, tool: "count", args: []byte(`{"n":2}`), window: 1 << 20},
		{mode: 3, tool: "callback_result", reply: []byte(`{"ok":true}`)},
		{mode: 3, tool: "callback_result", reply: deep(100_000)},
		{mode: 3, tool: "callback_result", reply: []byte(strings.Repeat("7", 5_000))},
		{mode: 3, tool: "callback_result", reply: []byte(`{"unclosed":`)},
		{mode: 3, tool: "callback_result", reply: []byte("!handler failed on \xff\xfe bytes")},
		{mode: 4, tool: "session_id", args: []byte(`{"value":` + string(deep(1_000)) + `}`)},
		{mode: 4, tool: "session_id", args: []byte(`{}`)},
		{mode: 5, tool: "echo", args: []byte(`{"value":"` + strings.Repeat("z", 2<<20) + `"}`)},
	}
}

// fuzzWorkers: one runtime with a pool per transport, one worker each,
// allowed a single restart, whose first worker pids are remembered.
type fuzzWorkers struct {
	rt       *snakepit.Runtime
	pools    []string
	pids     map[string]int
	sessions map[string]*snakepit.Session

	mu    sync.Mutex
	reply json.RawMessage // what the "give" callback answers
}

func startFuzzWorkers(f *testing.F) *fuzzWorkers {
	adapters, _ := os.Getwd()
	mk := func(name, transport, python string) snakepit.PoolConfig {
		return snakepit.PoolConfig{Name: name, Adapter: "depth_tools", Transport: transport, Python: python,
			PythonPath: []string{adapters + "/testdata/pyadapters"},
			Restart:    snakepit.RestartPolicy{MaxRestarts: 1, Period: time.Hour}}
	}
	pools := []snakepit.PoolConfig{mk("n", "native", ""), mk("g", "grpc", "")}
	if ft := os.Getenv(EnvFreeThreadedPython); ft != "" {
		pools = append(pools, mk("t", "native", ft))
	}
	logs := &logBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rt, err := snakepit.Start(ctx, snakepit.Config{Pools: pools, MaxMessageBytes: 1 << 20,
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: logs})})
	if err != nil {
		f.Fatalf("Start: %v\n%s", err, logs.String())
	}
	f.Cleanup(func() {
		if f.Failed() {
			f.Logf("runtime logs:\n%s", logs.String())
		}
		_ = rt.Stop(context.Background())
	})
	w := &fuzzWorkers{rt: rt, pids: map[string]int{}, sessions: map[string]*snakepit.Session{}}
	if err := rt.Register("give", func(context.Context, struct{}) (json.RawMessage, error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.reply) > 0 && w.reply[0] == '!' { // an error whose text may be any bytes
			return nil, errors.New(string(w.reply[1:]))
		}
		return w.reply, nil
	}); err != nil {
		f.Fatal(err)
	}
	if err := rt.Register("one", func(context.Context, struct{}) (int, error) { return 1, nil }); err != nil {
		f.Fatal(err)
	}
	for _, p := range pools {
		w.pools = append(w.pools, p.Name)
		if w.sessions[p.Name], err = rt.OpenSession(ctx, p.Name, snakepit.SessionOptions{}); err != nil {
			f.Fatal(err)
		}
		w.pids[p.Name] = fuzzPid(ctx, rt, p.Name)
	}
	return w
}

func fuzzPid(ctx context.Context, rt *snakepit.Runtime, pool string) int {
	hs, err := rt.Health(ctx)
	if err != nil {
		return -1
	}
	for _, h := range hs {
		if h.Name == pool && len(h.Workers) == 1 && h.Ready == 1 && !h.Failed && h.Restarts == 0 {
			return h.Workers[0].Pid
		}
	}
	return -1
}

// call makes one call of the kind mode picks (0: tool with raw as the
// arguments, 1: raw as argument "value", 2: a stream, 3: a callback whose
// handler answers reply, 4: a session call, 5: as 1) and returns how it
// ended. A binary argument makes the arguments a map; raw bytes that are
// not JSON travel as a string argument there.
func (w *fuzzWorkers) call(ctx context.Context, pool string, mode uint8, tool string, raw []byte, binName string, bin []byte, window int, reply []byte) error {
	var args, value any = json.RawMessage(raw), json.RawMessage(raw)
	if !json.Valid(raw) {
		value = string(raw) // so that it reaches Python, unless it is not UTF-8
	}
	if mode%2 == 1 || bin != nil {
		m := map[string]any{"value": value}
		if bin != nil {
			m[binName] = bin
		}
		args = m
	}
	switch mode {
	case 2:
		for _, err := range w.rt.Stream(ctx, pool, "count", args, snakepit.Window(window)) {
			if err != nil {
				return err
			}
		}
		return nil
	case 3:
		w.mu.Lock()
		w.reply = reply
		w.mu.Unlock()
		_, err := w.rt.Call(ctx, pool, "callback_result", map[string]any{"name": "give"})
		return err
	case 4:
		_, err := w.sessions[pool].Call(ctx, "session_id", args)
		return err
	}
	if tool == "deep_result" || tool == "deep_callback" {
		tool = "echo" // they build what their arguments ask: fuzzed sizes would only cost memory
	}
	_, err := w.rt.Call(ctx, pool, tool, args)
	return err
}

// fuzzCallContext: a timeout of ttl when it is over 20 s (up to the
// largest, whose deadline int64 Unix nanoseconds cannot hold), else 20 s;
// either way cancelled after 20 s, so that a call that hangs fails as
// context.Canceled.
func fuzzCallContext(ttl int64) (context.Context, context.CancelFunc) {
	timeout := max(time.Duration(ttl), 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	stop := time.AfterFunc(20*time.Second, cancel)
	return ctx, func() { stop.Stop(); cancel() }
}

// perCallError: err is nil, a typed error of this call alone, or the tool's
// own exception; never the connection's, the worker's or the pool's.
func perCallError(err error) bool {
	var pe *snakepit.PythonError
	switch {
	case err == nil, errors.As(err, &pe):
		return true
	case errors.Is(err, snakepit.ErrTransport), errors.Is(err, snakepit.ErrWorkerCrashed),
		errors.Is(err, snakepit.ErrPoolUnavailable), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, context.Canceled):
		return false
	}
	for _, s := range []error{snakepit.ErrBadArguments, snakepit.ErrUnknownTool,
		snakepit.ErrUnencodableResult, snakepit.ErrMessageTooLarge} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// stillServes: the pool's first worker process answers a normal call, and
// its tools still reach Go callbacks.
func (w *fuzzWorkers) stillServes(t *testing.T, pool string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := w.rt.Call(ctx, pool, "echo", map[string]any{"value": "still here"})
	var got string
	if err != nil || res.Decode(&got) != nil || got != "still here" {
		t.Fatalf("pool %s after the input: echo = %q, %v", pool, got, err)
	}
	res, err = w.rt.Call(ctx, pool, "callback_result", map[string]any{"name": "one"})
	var cb struct{ Kind, Message string }
	if err != nil || res.Decode(&cb) != nil || cb.Kind != "OK" {
		t.Fatalf("pool %s after the input: a callback = %+v, %v", pool, cb, err)
	}
	if pid := fuzzPid(ctx, w.rt, pool); pid != w.pids[pool] {
		t.Fatalf("pool %s after the input: worker pid %d (-1: restarted, failed or not ready), was %d", pool, pid, w.pids[pool])
	}
}
