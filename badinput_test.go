package snakepit_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
)

// badInput is one way a caller, an operator or a tool author can get
// something wrong. The error it ends with must match is (errors.Is), pass
// check (errors.As and the typed fields), and hold every fragment of says:
// what went wrong and what to do about it.
type badInput struct {
	name  string
	do    func(t *testing.T, e *badInputEnv) error
	is    error // nil: no sentinel; check does errors.As
	check func(t *testing.T, err error)
	says  []string
}

// badInputEnv is the runtime the cases share: pool "p" on the native
// transport and pool "g" on gRPC, one worker each, with a 64 KiB message
// limit. After every case both still serve a normal call, on the same
// worker process: bad input loses nothing.
type badInputEnv struct {
	rt   *snakepit.Runtime
	logs *logBuffer
	pids map[string]int
	dir  string // for the bump tool's proof-of-execution files
}

const badInputMaxMessage = 64 << 10

// TestBadInput: every kind of bad input ends with a clear, typed error
// that says what to do, and leaves the runtime serving as before.
func TestBadInput(t *testing.T) {
	e := startBadInputEnv(t)
	for _, c := range badInputCases() {
		t.Run(c.name, func(t *testing.T) {
			err := c.do(t, e)
			if err == nil {
				t.Fatalf("no error, want %v", c.is)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Fatalf("got %v (%T), want errors.Is %v", err, err, c.is)
			}
			if c.check != nil {
				c.check(t, err)
			}
			for _, s := range c.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error message lacks %q:\n%v", s, err)
				}
			}
			e.stillServes(t)
		})
	}
}

func startBadInputEnv(t *testing.T) *badInputEnv {
	log, logs := testLogger(t)
	ctx := callCtx(t)
	p := badInputPool(t, "p", "badinput_tools")
	g := badInputPool(t, "g", "badinput_tools")
	g.Transport = "grpc"
	rt, err := snakepit.Start(ctx, snakepit.Config{Logger: log, MaxMessageBytes: badInputMaxMessage,
		Pools: []snakepit.PoolConfig{p, g}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := rt.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	e := &badInputEnv{rt: rt, logs: logs, pids: map[string]int{}, dir: t.TempDir()}
	for _, name := range []string{"p", "g"} {
		e.pids[name] = health(t, rt, name).Workers[0].Pid
	}
	return e
}

func badInputPool(t *testing.T, name, adapter string) snakepit.PoolConfig {
	return snakepit.PoolConfig{Name: name, Adapter: adapter, PythonPath: adapterPath(t),
		Restart: snakepit.RestartPolicy{InitialBackoff: 10 * time.Millisecond}}
}

// stillServes: both pools answer a normal call, on the worker process they
// started with (no crash, no restart), and neither has failed.
func (e *badInputEnv) stillServes(t *testing.T) {
	t.Helper()
	for _, pool := range []string{"p", "g"} {
		want := "still serving after " + t.Name()
		res, err := e.rt.Call(callCtx(t), pool, "echo", map[string]any{"value": want})
		if err != nil {
			t.Fatalf("pool %s lost after the bad input: %v", pool, err)
		}
		var got string
		if err := res.Decode(&got); err != nil || got != want {
			t.Fatalf("pool %s: echo = %q, %v; want %q", pool, got, err, want)
		}
		h := health(t, e.rt, pool)
		if h.Failed || h.Ready != 1 || h.Workers[0].Pid != e.pids[pool] || h.Workers[0].Restarts != 0 {
			t.Fatalf("pool %s changed after the bad input: %+v (first pid %d)", pool, h, e.pids[pool])
		}
	}
}

// call returns the error of one call with args on the shared runtime.
func call(pool, tool string, args any) func(*testing.T, *badInputEnv) error {
	return func(t *testing.T, e *badInputEnv) error {
		_, err := e.rt.Call(callCtx(t), pool, tool, args)
		return err
	}
}

// startWith returns the error of a Start with cfg, which must fail; a
// Runtime it returns anyway is stopped.
func startWith(cfg func(t *testing.T) snakepit.Config) func(*testing.T, *badInputEnv) error {
	return func(t *testing.T, e *badInputEnv) error {
		c := cfg(t)
		c.Logger, _ = testLogger(t)
		rt, err := snakepit.Start(callCtx(t), c)
		if rt != nil {
			_ = rt.Stop(callCtx(t))
		}
		return err
	}
}

func badInputCases() []badInput {
	var cases []badInput
	cases = append(cases, configCases()...)
	cases = append(cases, bootCases()...)
	cases = append(cases, pythonCases()...)
	cases = append(cases, routingCases()...)
	cases = append(cases, argumentCases()...)
	cases = append(cases, toolFailureCases()...)
	cases = append(cases, resultCases()...)
	cases = append(cases, sizeCases()...)
	cases = append(cases, outputCases()...)
	cases = append(cases, contextCases()...)
	cases = append(cases, stopCases()...)
	return cases
}

// ---------------------------------------------------------------- config

func configCase(name string, cfg snakepit.Config, path string, says ...string) badInput {
	return badInput{
		name: "config/" + name,
		do:   startWith(func(*testing.T) snakepit.Config { return cfg }),
		is:   snakepit.ErrInvalidConfig,
		check: func(t *testing.T, err error) {
			var ce *snakepit.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("got %T, want *ConfigError", err)
			}
			for _, f := range ce.Fields {
				if f.Path == path {
					return
				}
			}
			t.Fatalf("no field error at %q in %v", path, ce.Fields)
		},
		says: append([]string{path + ": "}, says...),
	}
}

func configCases() []badInput {
	ok := snakepit.PoolConfig{Name: "ok", Adapter: "badinput_tools"}
	with := func(edit func(p *snakepit.PoolConfig)) snakepit.Config {
		p := ok
		edit(&p)
		return snakepit.Config{Pools: []snakepit.PoolConfig{p}}
	}
	return []badInput{
		configCase("no pools", snakepit.Config{}, "pools", "at least one pool is required"),
		configCase("bad name", with(func(p *snakepit.PoolConfig) { p.Name = "my pool!" }),
			"pools[0].name", `"my pool!" may hold only letters, digits`),
		configCase("duplicate name", snakepit.Config{Pools: []snakepit.PoolConfig{ok, ok}},
			"pools[1].name", `"ok" is already the name of pools[0]`),
		configCase("negative size", with(func(p *snakepit.PoolConfig) { p.Size = -2 }),
			"pools[0].size", "must be ≥ 1 (got -2); 0 means the default, 1"),
		configCase("negative queue", with(func(p *snakepit.PoolConfig) { p.QueueSize = -1 }),
			"pools[0].queue_size", "0 means the default, 1000"),
		configCase("negative call timeout", snakepit.Config{Pools: []snakepit.PoolConfig{ok}, CallTimeout: -time.Second},
			"call_timeout", "must be ≥ 0 (got -1s); 0 means the default"),
		configCase("negative start timeout", with(func(p *snakepit.PoolConfig) { p.StartTimeout = -time.Millisecond }),
			"pools[0].start_timeout", "must be ≥ 0"),
		configCase("bad profile", with(func(p *snakepit.PoolConfig) { p.Profile = "fibers" }),
			"pools[0].profile", `unknown profile "fibers" (known: auto, process, thread)`),
		configCase("bad transport", with(func(p *snakepit.PoolConfig) { p.Transport = "carrier-pigeon" }),
			"pools[0].transport", `unknown transport "carrier-pigeon" (known: grpc, native)`),
		configCase("adapter as a file path", with(func(p *snakepit.PoolConfig) { p.Adapter = "testdata/pyadapters/badinput_tools.py" }),
			"pools[0].adapter", `looks like a file path: name the module instead ("badinput_tools"), with its directory in PythonPath`),
		configCase("adapter with two classes", with(func(p *snakepit.PoolConfig) { p.Adapter = "m:A:B" }),
			"pools[0].adapter", `"m:A:B" is not a module path`),
		configCase("bad env key", with(func(p *snakepit.PoolConfig) { p.Env = map[string]string{"OMP THREADS": "1"} }),
			"pools[0].env", `"OMP THREADS" is not a valid variable name`),
		configCase("NaN jitter", with(func(p *snakepit.PoolConfig) { p.Restart.Jitter = math.NaN() }),
			"pools[0].restart.jitter", "must be within 0 and 1 (got NaN)"),
		configCase("message limit beyond the wire", snakepit.Config{Pools: []snakepit.PoolConfig{ok}, MaxMessageBytes: math.MaxInt},
			"max_message_bytes", "must be at most"),
		configCase("every mistake at once", snakepit.Config{CallTimeout: -1,
			Pools: []snakepit.PoolConfig{{Size: -1, Transport: "udp"}}},
			"pools[0].transport", "call_timeout: ", "pools[0].name: is required", "pools[0].adapter: is required",
			"pools[0].size: "),
	}
}

// ---------------------------------------------------------------- boot

// bootCase starts a pool with adapter, which cannot boot; the BootError
// must carry the Python exception type and traceback, and no process of
// that adapter may be left.
func bootCase(name, adapter, pyType string, says ...string) badInput {
	return badInput{
		name: "boot/" + name,
		do: startWith(func(t *testing.T) snakepit.Config {
			return snakepit.Config{Pools: []snakepit.PoolConfig{badInputPool(t, "b", adapter)}}
		}),
		is: snakepit.ErrBootFailed,
		check: func(t *testing.T, err error) {
			var boot *snakepit.BootError
			if !errors.As(err, &boot) {
				t.Fatalf("got %T, want *BootError", err)
			}
			if boot.Type != pyType || boot.Adapter != adapter || !strings.Contains(boot.Traceback, "Traceback") {
				t.Fatalf("BootError = {Type %q, Adapter %q, Traceback %q}, want type %q", boot.Type, boot.Adapter, boot.Traceback, pyType)
			}
			if left := processesOfRun(t, "--adapter\x00"+adapter+"\x00"); len(left) != 0 {
				t.Fatalf("worker processes left after a failed Start: %v", left)
			}
		},
		says: append(says, "fix: make the adapter importable", "PoolConfig.PythonPath"),
	}
}

func bootCases() []badInput {
	return []badInput{
		bootCase("missing adapter module", "badinput_no_such_module", "builtins.ModuleNotFoundError",
			"No module named 'badinput_no_such_module'"),
		bootCase("adapter import raises", "badinput_import_raises", "builtins.ValueError",
			"BADINPUT_CONFIG is not set; set it", "badinput_import_raises.py"),
		bootCase("adapter class constructor raises", "badinput_tools:FailingAdapter", "builtins.RuntimeError",
			"set BADINPUT_MODEL_PATH", "in __init__"),
		bootCase("adapter class missing", "badinput_tools:NoSuchAdapter", "snakepit.adapter.AdapterError",
			"NoSuchAdapter"),
		bootCase("adapter without tools", "no_tools", "snakepit.adapter.AdapterError",
			"exposes no tools: decorate functions with @snakepit.tool"),
	}
}

// ---------------------------------------------------------------- python

// noPythonCase: Start with an interpreter that cannot run the workers.
func noPythonCase(name string, cfg func(t *testing.T) snakepit.Config, source string, says ...string) badInput {
	return badInput{
		name: "python/" + name,
		do:   startWith(cfg),
		is:   snakepit.ErrNoPython,
		check: func(t *testing.T, err error) {
			var np *snakepit.NoPythonError
			if !errors.As(err, &np) {
				t.Fatalf("got %T, want *NoPythonError", err)
			}
			if np.Source != source || len(np.Tried) == 0 || np.Tried[0].Candidate == "" || np.Tried[0].Problem == "" {
				t.Fatalf("NoPythonError = %+v, want source %q and the candidates tried", np, source)
			}
		},
		says: says,
	}
}

func pythonCases() []badInput {
	const missing = "/nonexistent/badinput/python3"
	return []badInput{
		noPythonCase("nonexistent Config.Python", func(t *testing.T) snakepit.Config {
			return snakepit.Config{Python: missing, Pools: []snakepit.PoolConfig{badInputPool(t, "b", "badinput_tools")}}
		}, "Config.Python", missing+": not found", "set Config.Python or $SNAKEPIT_PYTHON"),
		noPythonCase("nonexistent $SNAKEPIT_PYTHON", func(t *testing.T) snakepit.Config {
			t.Setenv("SNAKEPIT_PYTHON", missing)
			return snakepit.Config{Pools: []snakepit.PoolConfig{badInputPool(t, "b", "badinput_tools")}}
		}, "$SNAKEPIT_PYTHON", missing+": not found", "set Config.Python or $SNAKEPIT_PYTHON"),
		noPythonCase("gRPC on a Python without grpcio", func(t *testing.T) snakepit.Config {
			p := badInputPool(t, "b", "badinput_tools")
			p.Transport = "grpc"
			return snakepit.Config{Python: pythonWithoutGRPC(t), Pools: []snakepit.PoolConfig{p}}
		}, "Config.Python", "can import grpc, google.protobuf", "cannot import grpc (ModuleNotFoundError",
			"pip install grpcio protobuf", "use the default native transport"),
	}
}

// pythonWithoutGRPC is an interpreter that cannot import grpc: the python3
// first on PATH when it lacks it (a pyenv build, say), else python3
// without its site-packages.
func pythonWithoutGRPC(t *testing.T) string {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 on PATH")
	}
	if exec.Command(py, "-c", "import grpc").Run() != nil {
		return py
	}
	wrapper := filepath.Join(t.TempDir(), "python3-no-site")
	script := fmt.Sprintf("#!/bin/sh\nexec %q -S \"$@\"\n", py)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper
}

// ---------------------------------------------------------------- routing

func routingCases() []badInput {
	return []badInput{
		{name: "call/unknown pool", do: call("nope", "echo", nil), is: snakepit.ErrUnknownPool,
			says: []string{`pool "nope"`, "configured pools: p, g"}},
		{name: "call/empty tool name", do: call("p", "", nil), is: snakepit.ErrUnknownTool,
			says: []string{"the tool name is empty", "Runtime.Tools lists them"}},
		{name: "call/unknown tool", do: call("p", "ecko", nil), is: snakepit.ErrUnknownTool,
			says: []string{"unknown tool 'ecko'", "available tools: ", "echo", "bump", "junk_output"}},
		{name: "call/unknown tool over gRPC", do: call("g", "ecko", nil), is: snakepit.ErrUnknownTool,
			says: []string{"unknown tool 'ecko'", "available tools: ", "echo"}},
	}
}

// ---------------------------------------------------------------- arguments

type failingMarshaler struct{}

func (failingMarshaler) MarshalJSON() ([]byte, error) { return nil, errors.New("no JSON for you") }

// argsCase: arguments that cannot be encoded; nothing reaches Python.
func argsCase(name string, args any, says ...string) badInput {
	return badInput{name: "args/" + name, do: call("p", "echo", args), is: snakepit.ErrBadArguments,
		says: says}
}

func argumentCases() []badInput {
	cyclic := map[string]any{}
	cyclic["self"] = cyclic
	type point struct{ X int }
	return []badInput{
		argsCase("a channel", map[string]any{"value": make(chan int)}, "cannot be encoded as JSON", "chan int"),
		argsCase("a func", map[string]any{"value": func() {}}, "cannot be encoded as JSON", "func()"),
		argsCase("NaN float", map[string]any{"value": math.NaN()}, "cannot be encoded as JSON", "NaN"),
		argsCase("infinite float", map[string]any{"value": []float64{1, math.Inf(-1)}}, "cannot be encoded as JSON", "-Inf"),
		argsCase("map with float keys", map[float64]any{1.5: "x"}, "cannot be encoded as JSON", "map[float64]"),
		argsCase("nested map with any keys", map[string]any{"value": map[any]any{"k": 1}}, "cannot be encoded as JSON"),
		argsCase("a cycle", cyclic, "cannot be encoded as JSON", "cycle"),
		argsCase("a failing MarshalJSON", map[string]any{"value": failingMarshaler{}}, "no JSON for you"),
		argsCase("a slice, not keyword arguments", []any{1, 2}, "must encode to a JSON object of keyword arguments", "[]interface {}"),
		argsCase("a nil struct pointer", (*point)(nil), "must encode to a JSON object", "*snakepit_test.point"),
		argsCase("a string that is not UTF-8", map[string]any{"value": "caf\xe9"},
			`a string (argument "value") is not valid UTF-8`, "send binary data as a []byte"),
		argsCase("names that are not UTF-8", map[string]any{"a\xff": 1, "a\xfe": 2}, "not valid UTF-8", "[]byte"),
		{name: "args/raw bytes under a name that is not UTF-8", do: call("g", "echo_bytes", map[string]any{"d\xe0": []byte("x")}),
			is: snakepit.ErrBadArguments, says: []string{`(the argument name "d\xe0") is not valid UTF-8`}},
		argsCase("a nested string that is not UTF-8", map[string]any{"value": []any{"ok", map[string]string{"k": "\xff"}}},
			"a string in the arguments is not valid UTF-8"),
		{name: "args/wrong argument name", do: call("p", "add", map[string]any{"x": 1, "z": 2}),
			is: snakepit.ErrBadArguments, check: notPythonError,
			says: []string{"add(x: int, y: int = 0)", "unexpected keyword argument 'z'"}},
		{name: "args/missing argument", do: call("p", "add", map[string]any{"y": 2}),
			is: snakepit.ErrBadArguments, check: notPythonError,
			says: []string{"add(x: int, y: int = 0)", "missing a required argument: 'x'"}},
		{name: "args/wrong argument name over gRPC", do: call("g", "add", map[string]any{"x": 1, "why": 2}),
			is: snakepit.ErrBadArguments, check: notPythonError,
			says: []string{"add(x: int, y: int = 0)", "unexpected keyword argument 'why'"}},
	}
}

// notPythonError: a signature mismatch is the caller's mistake, found
// before the tool runs, not an exception of the tool.
func notPythonError(t *testing.T, err error) {
	var pe *snakepit.PythonError
	if errors.As(err, &pe) {
		t.Fatalf("a signature mismatch came back as a PythonError: %+v", pe)
	}
}

// ---------------------------------------------------------------- tools raising

// raised: the error is a *PythonError of pyType whose traceback reaches
// into the tool.
func raised(pyType, message, inTraceback string) func(t *testing.T, err error) {
	return func(t *testing.T, err error) {
		var pe *snakepit.PythonError
		if !errors.As(err, &pe) {
			t.Fatalf("got %T, want *PythonError", err)
		}
		for _, s := range []error{snakepit.ErrBadArguments, snakepit.ErrUnknownTool, snakepit.ErrWorkerCrashed, snakepit.ErrTransport} {
			if errors.Is(err, s) {
				t.Fatalf("a tool's exception matches %v: %v", s, err)
			}
		}
		if pe.Type != pyType || !strings.Contains(pe.Message, message) || pe.Worker == "" ||
			!strings.Contains(pe.Traceback, "badinput_tools.py") || !strings.Contains(pe.Traceback, inTraceback) {
			t.Fatalf("PythonError = %+v, want type %q, message %q, traceback through %q", pe, pyType, message, inTraceback)
		}
	}
}

// pythonCase: a tool raises; no sentinel matches, errors.As finds the
// *PythonError.
func pythonCase(name, pool string, args map[string]any, pyType, message, inTraceback string) badInput {
	return badInput{name: "raise/" + name, do: call(pool, "raise_error", args), check: raised(pyType, message, inTraceback), says: []string{pool + ".raise_error raised " + pyType}}
}

func toolFailureCases() []badInput {
	return []badInput{
		pythonCase("ValueError", "p", map[string]any{"kind": "ValueError", "message": "no such user 42"},
			"builtins.ValueError", "no such user 42", "raise errors[kind](message)"),
		pythonCase("adapter's own exception type", "p", map[string]any{"kind": "QuotaError", "message": "quota of 10 calls used up"},
			"badinput_tools.QuotaError", "quota of 10 calls used up", "in raise_error"),
		pythonCase("SystemExit in a tool", "p", map[string]any{"kind": "SystemExit", "message": "3"},
			"builtins.SystemExit", "3", "in raise_error"),
		pythonCase("exception whose str raises", "p", map[string]any{"kind": "Unprintable", "message": ""},
			"badinput_tools.Unprintable", "unprintable", "in raise_error"),
		pythonCase("ValueError over gRPC", "g", map[string]any{"kind": "ValueError", "message": "bad row 7"},
			"builtins.ValueError", "bad row 7", "in raise_error"),
		{name: "raise/TypeError inside the tool is no signature mismatch", do: call("p", "add", map[string]any{"x": "1", "y": 2}),
			check: raised("builtins.TypeError", "can only concatenate str", "return x + y"),
			says:  []string{"p.add raised builtins.TypeError"}},
	}
}

// ---------------------------------------------------------------- results

func resultCase(pool, kind string, says ...string) badInput {
	return badInput{name: "result/" + kind + " on " + pool, do: call(pool, "unencodable", map[string]any{"kind": kind}),
		is: snakepit.ErrUnencodableResult, says: append(says, "tool 'unencodable' returned", "allowed: ")}
}

func resultCases() []badInput {
	return []badInput{
		resultCase("p", "object", "a value of type object, which cannot be encoded as JSON"),
		resultCase("p", "set", "a value of type set"),
		resultCase("p", "nan", "a float NaN or infinity"),
		resultCase("p", "inf", "a float NaN or infinity"),
		resultCase("p", "tuple_keys", "cannot be encoded as JSON"),
		resultCase("p", "nested", "a value of type object inside the result"),
		resultCase("p", "cycle", "a value JSON cannot encode (Circular reference"),
		resultCase("g", "object", "a value of type object"),
		resultCase("g", "nan", "a float NaN or infinity"),
	}
}

// ---------------------------------------------------------------- sizes

func sizeCases() []badInput {
	tooBig := badInputMaxMessage + 1
	return []badInput{
		{name: "size/request of raw bytes", do: call("p", "echo_bytes", map[string]any{"data": make([]byte, tooBig)}),
			is: snakepit.ErrMessageTooLarge, says: []string{"more than Config.MaxMessageBytes (65536)"}},
		{name: "size/request of JSON", do: call("g", "echo", map[string]any{"value": strings.Repeat("j", tooBig)}),
			is: snakepit.ErrMessageTooLarge, says: []string{"more than Config.MaxMessageBytes (65536)"}},
		{name: "size/raw reply", do: call("p", "big_bytes", map[string]any{"n": tooBig}),
			is: snakepit.ErrMessageTooLarge, says: []string{"Config.MaxMessageBytes"}},
		{name: "size/JSON reply", do: call("p", "big_text", map[string]any{"n": tooBig}),
			is: snakepit.ErrMessageTooLarge, says: []string{"Config.MaxMessageBytes"}},
		{name: "size/raw reply over gRPC", do: call("g", "big_bytes", map[string]any{"n": tooBig}),
			is: snakepit.ErrMessageTooLarge, says: []string{"Config.MaxMessageBytes"}},
		{name: "size/JSON reply over gRPC", do: call("g", "big_text", map[string]any{"n": 4 * tooBig}),
			is: snakepit.ErrMessageTooLarge, says: []string{"Config.MaxMessageBytes"}},
	}
}

// ---------------------------------------------------------------- output

// junkCase: a tool writes junk to stdout and stderr after the handshake;
// the call still returns its result and the junk ends up in the logs.
func junkCase(pool string) badInput {
	return badInput{
		name: "output/junk on stdout and stderr on " + pool,
		do: func(t *testing.T, e *badInputEnv) error {
			marker := "junk-marker-" + pool
			res, err := e.rt.Call(callCtx(t), pool, "junk_output", map[string]any{"marker": marker})
			if err != nil {
				return err
			}
			var got string
			if err := res.Decode(&got); err != nil || got != marker {
				t.Fatalf("junk_output = %q, %v", got, err)
			}
			for _, line := range []string{marker + ": stream=stdout", marker + ": stream=stderr", marker + " via print: stream=stderr"} {
				waitFor(t, "the junk in the logs: "+line, 10*time.Second, func() bool {
					return strings.Contains(e.logs.String(), line)
				})
			}
			// Then the very next call is served as usual: nothing was taken for a frame.
			_, err = e.rt.Call(callCtx(t), pool, "ecko", nil)
			return err
		},
		is:   snakepit.ErrUnknownTool,
		says: []string{"available tools"},
	}
}

func outputCases() []badInput {
	return []badInput{junkCase("p"), junkCase("g")}
}

// ---------------------------------------------------------------- contexts

// neverRuns: a call with a dead context; the bump tool would leave a file.
// A call after it on the same one-worker pool proves nothing was queued.
func neverRuns(ctx func() (context.Context, context.CancelFunc)) func(*testing.T, *badInputEnv) error {
	return func(t *testing.T, e *badInputEnv) error {
		proof := filepath.Join(e.dir, strings.ReplaceAll(t.Name(), "/", "_"))
		c, cancel := ctx()
		defer cancel()
		_, err := e.rt.Call(c, "p", "bump", map[string]any{"path": proof})
		if _, err := e.rt.Call(callCtx(t), "p", "echo", nil); err != nil {
			t.Fatal(err)
		}
		if _, statErr := os.Stat(proof); !os.IsNotExist(statErr) {
			t.Fatalf("the call with a dead context ran anyway (%v)", statErr)
		}
		return err
	}
}

func contextCases() []badInput {
	return []badInput{
		{name: "context/already cancelled", is: context.Canceled, says: []string{"p.bump: context canceled"},
			do: neverRuns(func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, cancel
			})},
		{name: "context/deadline already passed", is: context.DeadlineExceeded, says: []string{"p.bump: context deadline exceeded"},
			do: neverRuns(func() (context.Context, context.CancelFunc) {
				return context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			})},
		{name: "context/deadline passes during the call", is: context.DeadlineExceeded, says: []string{"p.sleep"},
			do: func(t *testing.T, e *badInputEnv) error {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				defer cancel()
				_, err := e.rt.Call(ctx, "p", "sleep", map[string]any{"seconds": 0.3})
				return err
			}},
	}
}

// ---------------------------------------------------------------- stop

// ownRuntime starts a runtime of one native worker for a case that stops it.
func ownRuntime(t *testing.T) *snakepit.Runtime {
	log, _ := testLogger(t)
	rt, err := snakepit.Start(callCtx(t), snakepit.Config{Logger: log,
		Pools: []snakepit.PoolConfig{badInputPool(t, "s", "badinput_tools")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Stop(context.Background()) })
	return rt
}

func stopCases() []badInput {
	return []badInput{
		{name: "stop/calls after Stop", is: snakepit.ErrStopped, says: []string{`pool "s": runtime stopped`, "snakepit.Start"},
			do: func(t *testing.T, e *badInputEnv) error {
				rt := ownRuntime(t)
				if err := rt.Stop(callCtx(t)); err != nil {
					t.Fatal(err)
				}
				if _, err := rt.Tools(callCtx(t), "s"); !errors.Is(err, snakepit.ErrStopped) {
					t.Fatalf("Tools after Stop: %v, want ErrStopped", err)
				}
				if _, err := rt.Health(callCtx(t)); !errors.Is(err, snakepit.ErrStopped) {
					t.Fatalf("Health after Stop: %v, want ErrStopped", err)
				}
				_, err := rt.Call(callCtx(t), "s", "echo", nil)
				return err
			}},
		{name: "stop/Stop twice, at once and again", is: snakepit.ErrStopped, says: []string{"runtime stopped"},
			do: func(t *testing.T, e *badInputEnv) error {
				rt := ownRuntime(t)
				errs := make([]error, 3)
				var wg sync.WaitGroup
				for i := range 2 {
					wg.Add(1)
					go func() { defer wg.Done(); errs[i] = rt.Stop(callCtx(t)) }()
				}
				wg.Wait()
				errs[2] = rt.Stop(callCtx(t))
				for i, err := range errs {
					if err != nil {
						t.Fatalf("Stop #%d: %v", i+1, err)
					}
				}
				if left := processesOfRun(t, rt.RunID()); len(left) != 0 {
					t.Fatalf("processes left after Stop: %v", left)
				}
				_, err := rt.Call(callCtx(t), "s", "echo", nil)
				return err
			}},
	}
}
