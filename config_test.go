package snakepit

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	ok := PoolConfig{Name: "default", Adapter: "examples.textstats"}
	cases := []struct {
		name string
		cfg  Config
		want []string // "path: fragment of the problem"; none means valid
	}{
		{"minimal", Config{Pools: []PoolConfig{ok}}, nil},
		{"class adapter", Config{Pools: []PoolConfig{{Name: "m", Adapter: "pkg.mod:Model", Size: 3}}}, nil},
		{"no pools", Config{}, []string{"pools: at least one"}},
		{"negative size", Config{Pools: []PoolConfig{ok, {Name: "b", Adapter: "x", Size: -1}}}, []string{"pools[1].size: must be ≥ 1"}},
		{"missing name", Config{Pools: []PoolConfig{{Adapter: "x"}}}, []string{"pools[0].name: is required"}},
		{"bad name", Config{Pools: []PoolConfig{{Name: "a b", Adapter: "x"}}}, []string{"pools[0].name: \"a b\" may hold only"}},
		{"duplicate name", Config{Pools: []PoolConfig{ok, ok}}, []string{"pools[1].name: \"default\" is already the name of pools[0]"}},
		{"missing adapter", Config{Pools: []PoolConfig{{Name: "a"}}}, []string{"pools[0].adapter: is required"}},
		{"bad adapter", Config{Pools: []PoolConfig{{Name: "a", Adapter: "examples/textstats.py"}}}, []string{"pools[0].adapter: \"examples/textstats.py\" looks like a file path: name the module instead (\"textstats\")"}},
		{"adapter as a file name", Config{Pools: []PoolConfig{{Name: "a", Adapter: "x.py"}}}, []string{`pools[0].adapter: "x.py" looks like a file path`}},
		{"adapter with two classes", Config{Pools: []PoolConfig{{Name: "a", Adapter: "m:A:B"}}}, []string{"pools[0].adapter"}},
		{"negative queue", Config{Pools: []PoolConfig{{Name: "a", Adapter: "x", QueueSize: -5}}}, []string{"pools[0].queue_size: must be ≥ 1"}},
		{"unknown transport", Config{Pools: []PoolConfig{{Name: "a", Adapter: "x", Transport: "carrier-pigeon"}}}, []string{"pools[0].transport: unknown transport \"carrier-pigeon\""}},
		{"negative threads", Config{Pools: []PoolConfig{{Name: "a", Adapter: "x", Profile: "thread", ThreadsPerWorker: -2}}}, []string{"pools[0].threads_per_worker: must be ≥ 1"}},
		{"unknown profile", Config{Pools: []PoolConfig{{Name: "a", Adapter: "x", Profile: "fibers"}}}, []string{"pools[0].profile: unknown profile \"fibers\" (known: auto, process, thread)"}},
		{"negative start timeout", Config{Pools: []PoolConfig{{Name: "a", Adapter: "x", StartTimeout: -time.Second}}}, []string{"pools[0].start_timeout: must be ≥ 0"}},
		{"bad env key", Config{Pools: []PoolConfig{{Name: "a", Adapter: "x", Env: map[string]string{"A=B": "1"}}}}, []string{"pools[0].env: \"A=B\""}},
		{"negative restarts", Config{Pools: []PoolConfig{{Name: "a", Adapter: "x", Restart: RestartPolicy{MaxRestarts: -1}}}}, []string{"pools[0].restart.max_restarts"}},
		{"jitter above 1", Config{Pools: []PoolConfig{{Name: "a", Adapter: "x", Restart: RestartPolicy{Jitter: 1.5}}}}, []string{"pools[0].restart.jitter"}},
		{"backoff inverted", Config{Pools: []PoolConfig{{Name: "a", Adapter: "x", Restart: RestartPolicy{InitialBackoff: time.Minute, MaxBackoff: time.Second}}}}, []string{"pools[0].restart.initial_backoff"}},
		{"negative call timeout", Config{Pools: []PoolConfig{ok}, CallTimeout: -1}, []string{"call_timeout: must be ≥ 0"}},
		{"negative grace", Config{Pools: []PoolConfig{ok}, ShutdownGrace: -1}, []string{"shutdown_grace"}},
		{"negative kill after", Config{Pools: []PoolConfig{ok}, KillAfter: -1}, []string{"kill_after"}},
		{"negative max message", Config{Pools: []PoolConfig{ok}, MaxMessageBytes: -1}, []string{"max_message_bytes"}},
		{"every mistake at once", Config{Pools: []PoolConfig{{Size: -1}}}, []string{"pools[0].name", "pools[0].adapter", "pools[0].size"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("got %v, want a *ConfigError", err)
			}
			if len(ce.Fields) != len(c.want) {
				t.Fatalf("got %d field errors (%v), want %d", len(ce.Fields), err, len(c.want))
			}
			for i, w := range c.want {
				if got := ce.Fields[i].String(); !strings.HasPrefix(got, w) && !strings.Contains(got, w) {
					t.Errorf("field error %d = %q, want it to contain %q", i, got, w)
				}
			}
		})
	}
}

func TestDefaultsFillZeroFields(t *testing.T) {
	c := Config{Pools: []PoolConfig{{Name: "a", Adapter: "x"}}, Python: "/opt/py"}.withDefaults()
	p := c.Pools[0]
	if c.CallTimeout != DefaultCallTimeout || c.ShutdownGrace != DefaultShutdownGrace || c.KillAfter != DefaultKillAfter ||
		c.MaxMessageBytes != DefaultMaxMessageBytes || c.Logger == nil {
		t.Fatalf("runtime defaults not applied: %+v", c)
	}
	if p.Size != DefaultPoolSize || p.QueueSize != DefaultQueueSize || p.StartTimeout != DefaultStartTimeout ||
		p.Python != "/opt/py" || p.Restart.MaxRestarts == 0 {
		t.Fatalf("pool defaults not applied: %+v", p)
	}
}

func TestEncodeArgs(t *testing.T) {
	type S struct {
		A int `json:"a"`
	}
	cases := []struct {
		name     string
		args     any
		json     string
		binaries int
		bad      bool
	}{
		{"nil", nil, "", 0, false},
		{"map", map[string]any{"x": 1}, `{"x":1}`, 0, false},
		{"map with bytes", map[string]any{"x": 1, "b": []byte{0, 1}}, `{"x":1}`, 1, false},
		{"struct", S{A: 2}, `{"a":2}`, 0, false},
		{"pointer to struct", &S{A: 3}, `{"a":3}`, 0, false},
		{"string map", map[string]string{"k": "v"}, `{"k":"v"}`, 0, false},
		{"slice", []int{1}, "", 0, true},
		{"scalar", 5, "", 0, true},
		{"channel", map[string]any{"c": make(chan int)}, "", 0, true},
		{"func", func() {}, "", 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j, bin, err := encodeArgs(c.args)
			if c.bad {
				if err == nil {
					t.Fatalf("no error for %T", c.args)
				}
				return
			}
			if err != nil || string(j) != c.json || len(bin) != c.binaries {
				t.Fatalf("got %q, %d binaries, %v; want %q, %d", j, len(bin), err, c.json, c.binaries)
			}
		})
	}
}

func TestAdapterGivenAsAFilePath(t *testing.T) {
	for _, adapter := range []string{"tools.py", "src/app/tools.py", "./tools"} {
		err := Config{Pools: []PoolConfig{{Name: "p", Adapter: adapter}}}.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Fields[0].Path != "pools[0].adapter" || !strings.Contains(ce.Fields[0].Problem, `name the module instead ("tools")`) {
			t.Errorf("adapter %q: %v", adapter, err)
		}
	}
}
