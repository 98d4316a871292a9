package snakepit

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/snakepit-go/snakepit/profiles"
	"github.com/snakepit-go/snakepit/pyworker"
)

// Seeds run as ordinary tests under `go test`; `make fuzz` fuzzes each
// target for $(FUZZTIME). Notable inputs also live in testdata/fuzz/<Name>/.

// fuzzPool is the fuzzed part of a PoolConfig.
type fuzzPool struct {
	name, adapter, profile, transport, envKey string
	size, queue, threads                      int
	startTimeout                              int64
	maxRestarts                               int
	period, initialBackoff, maxBackoff        int64
	jitter                                    float64
}

func (f fuzzPool) config(python string) PoolConfig {
	return PoolConfig{Name: f.name, Adapter: f.adapter, Profile: f.profile, Transport: f.transport,
		Size: f.size, QueueSize: f.queue, ThreadsPerWorker: f.threads, Python: python,
		StartTimeout: time.Duration(f.startTimeout), Env: map[string]string{f.envKey: "1", "SNAKEPIT_FUZZ": "1"},
		Restart: RestartPolicy{MaxRestarts: f.maxRestarts, Period: time.Duration(f.period),
			InitialBackoff: time.Duration(f.initialBackoff), MaxBackoff: time.Duration(f.maxBackoff), Jitter: f.jitter}}
}

// FuzzConfigValidate: Validate never panics and always gives the same
// answer; an error is a *ConfigError whose every field has a well-formed
// path and a problem; a Config it accepts is one withDefaults turns into a
// runnable one (every size, duration and limit in range), which itself
// validates and is a fixed point of withDefaults.
func FuzzConfigValidate(f *testing.F) {
	f.Add(uint8(1), "default", "other", "examples.textstats", "", "", "OMP_NUM_THREADS", "",
		0, 0, 0, int64(0), int64(0), int64(0), int64(0), 0, 0, int64(0), int64(0), int64(0), 0.0)
	f.Add(uint8(3), "a", "a", "pkg.mod:Model", "thread", "grpc", "A=B", "/usr/bin/python3",
		4, 10, 8, int64(time.Second), int64(-1), int64(0), int64(time.Minute), 1<<20, 3, int64(time.Minute),
		int64(time.Second), int64(time.Millisecond), 1.0)
	f.Add(uint8(2), "", "b c", "m:A:B", "fibers", "carrier-pigeon", "", "",
		-1, -1, -1, int64(-1), int64(0), int64(-1), int64(0), -1, -1, int64(-1), int64(-1), int64(-1), math.NaN())
	f.Add(uint8(1), "p", "q", "x", "auto", "native", "K", "", 1, 1, 1, int64(1), int64(1), int64(1), int64(1),
		math.MaxInt, 1, int64(1), int64(1), int64(0), 0.5)
	f.Add(uint8(1), "p", "q", "x", "", "", "K", "", 0, 0, 0, int64(0), int64(0), int64(0), int64(0),
		0, 0, int64(0), int64(20*time.Second), int64(0), 0.0) // initial backoff above the default max
	f.Add(uint8(1), "p", "q", "x", "", "", "K", "", 0, 0, 0, int64(0), int64(0), int64(0), int64(0),
		0, 0, int64(0), int64(0), int64(0), math.NaN()) // NaN passes "< 0 || > 1"
	f.Fuzz(func(t *testing.T, nPools uint8, name, name2, adapter, profile, transport, envKey, python string,
		size, queue, threads int, callTimeout, grace, killAfter, startTimeout int64, maxMessage, maxRestarts int,
		period, initialBackoff, maxBackoff int64, jitter float64) {
		fp := fuzzPool{name: name, adapter: adapter, profile: profile, transport: transport, envKey: envKey,
			size: size, queue: queue, threads: threads, startTimeout: startTimeout, maxRestarts: maxRestarts,
			period: period, initialBackoff: initialBackoff, maxBackoff: maxBackoff, jitter: jitter}
		c := Config{Python: python, CallTimeout: time.Duration(callTimeout), ShutdownGrace: time.Duration(grace),
			KillAfter: time.Duration(killAfter), MaxMessageBytes: maxMessage}
		for i := 0; i < int(nPools%4); i++ {
			p := fp.config("")
			if i == 1 {
				p.Name, p.Env = name2, map[string]string{"OK": "1", envKey + "2": "2", "X" + envKey: "3"}
			}
			c.Pools = append(c.Pools, p)
		}
		err := c.Validate()
		if again := c.Validate(); (err == nil) != (again == nil) || (err != nil && err.Error() != again.Error()) {
			t.Fatalf("Validate is not deterministic:\n%v\n%v", err, again)
		}
		if err != nil {
			checkConfigError(t, err, len(c.Pools))
			return
		}
		checkRunnable(t, c)
	})
}

var fieldPathRe = regexp.MustCompile(`^[a-z_]+(\[[0-9]+\])?(\.[a-z_]+)*$`)

func checkConfigError(t *testing.T, err error, pools int) {
	t.Helper()
	var ce *ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidConfig) || len(ce.Fields) == 0 {
		t.Fatalf("Validate returned %T %v, want a *ConfigError with fields", err, err)
	}
	for _, fe := range ce.Fields {
		if !fieldPathRe.MatchString(fe.Path) || strings.TrimSpace(fe.Problem) == "" {
			t.Fatalf("malformed field error %q: %q", fe.Path, fe.Problem)
		}
		if i := strings.IndexByte(fe.Path, '['); i >= 0 {
			n, _ := strconv.Atoi(fe.Path[i+1 : strings.IndexByte(fe.Path, ']')])
			if n >= pools {
				t.Fatalf("field error %q names a pool beyond the %d configured", fe.Path, pools)
			}
		}
		if !strings.Contains(err.Error(), fe.String()) {
			t.Fatalf("Error() %q lacks %q", err.Error(), fe.String())
		}
	}
}

// checkRunnable: c validated, so withDefaults must give a Config every part
// of the runtime can run with.
func checkRunnable(t *testing.T, c Config) {
	t.Helper()
	d := c.withDefaults()
	if d.CallTimeout <= 0 || d.ShutdownGrace <= 0 || d.KillAfter <= 0 || d.Logger == nil ||
		d.MaxMessageBytes <= 0 || d.MaxMessageBytes > maxMessageBytesLimit || len(d.Pools) != len(c.Pools) {
		t.Fatalf("runtime settings out of range after defaults: %+v", d)
	}
	names := map[string]bool{}
	for i, p := range d.Pools {
		if !poolNameRe.MatchString(p.Name) || names[p.Name] || !adapterRe.MatchString(p.Adapter) {
			t.Fatalf("pool name %q or adapter %q accepted", p.Name, p.Adapter)
		}
		names[p.Name] = true
		if p.Size < 1 || p.QueueSize < 1 || p.ThreadsPerWorker < 0 || p.StartTimeout <= 0 || p.Python != c.Python {
			t.Fatalf("pool settings out of range after defaults: %+v", p)
		}
		if _, err := profiles.Lookup(p.Profile); err != nil {
			t.Fatal(err)
		}
		if _, err := pyworker.LookupTransport(p.Transport); err != nil {
			t.Fatal(err)
		}
		r := p.Restart
		// An initial backoff set above max_backoff is refused; the default
		// one is capped by a smaller max_backoff, as every delay is.
		inverted := r.InitialBackoff > r.MaxBackoff && c.Pools[i].Restart.InitialBackoff != 0
		if r.MaxRestarts < 1 || r.Period <= 0 || r.InitialBackoff <= 0 || r.MaxBackoff <= 0 ||
			inverted || !(r.Jitter >= 0 && r.Jitter <= 1) {
			t.Fatalf("restart policy out of range after defaults: %+v (given %+v)", r, c.Pools[i].Restart)
		}
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("the defaults of a valid Config do not validate: %v", err)
	}
	d.Logger = c.Logger // compared apart: a fresh default logger each time
	if again := d.withDefaults(); !reflect.DeepEqual(again.Pools, d.Pools) || again.CallTimeout != d.CallTimeout ||
		again.ShutdownGrace != d.ShutdownGrace || again.KillAfter != d.KillAfter || again.MaxMessageBytes != d.MaxMessageBytes {
		t.Fatalf("withDefaults is not idempotent:\n%+v\n%+v", d, again)
	}
}

// FuzzEncodeArgs: encodeArgs never panics. When it succeeds, the JSON is a
// valid UTF-8 JSON object that decodes to exactly the arguments given
// (strings byte for byte, numbers to the same value, nested []byte as
// base64), and every top-level []byte travels raw with its bytes. When it
// fails, the arguments held something JSON cannot carry faithfully: a
// NaN or infinite float, or a string or name that is not valid UTF-8.
func FuzzEncodeArgs(f *testing.F) {
	f.Add("text", "a b c", "n", int64(3), 1.5, []byte{0, 1, 2, 255}, "data", false)
	f.Add("", "", "", int64(0), 0.0, []byte(nil), "", true)
	f.Add("k", `quote " backslash \ \ufffd`, "k", int64(math.MinInt64), math.Copysign(0, -1), []byte{}, "k", true)
	f.Add("k", "valid replacement char \uFFFD and \u2028", "big", int64(math.MaxInt64), 1e308, []byte("x"), "b", false)
	f.Add("bad", "caf\xe9", "n", int64(1), 2.0, []byte("y"), "b", true)
	f.Add("a\xff", "x", "a\xfe", int64(1), 2.0, []byte("y"), "b", false)
	f.Add("f", "x", "n", int64(1), math.Inf(1), []byte("y"), "b", false)
	f.Add("f", "x", "n", int64(1), math.NaN(), []byte("y"), "b", true)
	f.Add("s", "\\\ufffd\\\\ufffd", "n", int64(1), 5e-324, []byte("\xff\xfe"), "b", true)
	f.Fuzz(func(t *testing.T, k1, s, k2 string, n int64, fl float64, b []byte, k3 string, asStruct bool) {
		var args any
		if asStruct {
			args = fuzzArgs{S: s, N: n, F: fl, B: b, M: map[string]any{k1: s, k3: b}}
		} else {
			args = map[string]any{k1: s, k2: n, "f": fl, k3: b,
				"nested": map[string]any{"s": s, "b": b, "l": []any{s, fl, n, nil, true}, k1: k2}}
		}
		data, binary, err := encodeArgs(args)
		if err != nil {
			if !holdsUnfaithful(args) {
				t.Fatalf("encodeArgs(%#v) failed for no reason: %v", args, err)
			}
			return
		}
		if holdsUnfaithful(args) {
			t.Fatalf("encodeArgs(%#v) accepted what JSON cannot carry: %s", args, data)
		}
		checkEncoded(t, args, data, binary)
	})
}

type fuzzArgs struct {
	S string         `json:"s"`
	N int64          `json:"n"`
	F float64        `json:"f"`
	B []byte         `json:"b"` // in a struct: base64 inside the JSON
	M map[string]any `json:"m"`
}

// holdsUnfaithful: v holds a float JSON cannot write or a string (or map
// key) that is not valid UTF-8.
func holdsUnfaithful(v any) bool {
	switch v := v.(type) {
	case string:
		return !utf8.ValidString(v)
	case float64:
		return math.IsNaN(v) || math.IsInf(v, 0)
	case []any:
		for _, e := range v {
			if holdsUnfaithful(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range v {
			if holdsUnfaithful(k) || holdsUnfaithful(e) {
				return true
			}
		}
	case fuzzArgs:
		return holdsUnfaithful(v.S) || holdsUnfaithful(v.F) || holdsUnfaithful(v.M)
	}
	return false
}

func checkEncoded(t *testing.T, args any, data []byte, binary map[string][]byte) {
	t.Helper()
	if !json.Valid(data) || !utf8.Valid(data) || data[0] != '{' {
		t.Fatalf("not a valid UTF-8 JSON object: %q", data)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var got map[string]any
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	m, isMap := args.(map[string]any)
	if !isMap {
		a := args.(fuzzArgs)
		m, binary = map[string]any{"s": a.S, "n": a.N, "f": a.F, "b": base64.StdEncoding.EncodeToString(a.B), "m": a.M}, nil
		if a.B == nil {
			m["b"] = nil
		}
	}
	for k, v := range m {
		if raw, isBytes := v.([]byte); isMap && isBytes {
			_, inJSON := got[k]
			if travelled, isRaw := binary[k]; inJSON || !isRaw || !bytes.Equal(travelled, raw) {
				t.Fatalf("binary argument %q: sent %x, raw %x (raw: %v, also in JSON: %v)", k, raw, travelled, isRaw, inJSON)
			}
			continue
		}
		if !sameJSON(v, got[k]) {
			t.Fatalf("argument %q: sent %#v, JSON carries %#v (%s)", k, v, got[k], data)
		}
	}
	if len(got)+len(binary) != len(m) {
		t.Fatalf("%d arguments sent, %d in JSON and %d raw: %s", len(m), len(got), len(binary), data)
	}
}

// sameJSON: decoded (from a UseNumber decoder) is what JSON makes of sent.
func sameJSON(sent, decoded any) bool {
	switch s := sent.(type) {
	case nil, bool, string:
		return sent == decoded
	case int64:
		return decoded == json.Number(strconv.FormatInt(s, 10))
	case float64:
		num, ok := decoded.(json.Number)
		f, err := strconv.ParseFloat(string(num), 64)
		return ok && err == nil && f == s
	case []byte:
		return decoded == base64.StdEncoding.EncodeToString(s) || (s == nil && decoded == nil)
	case []any:
		d, ok := decoded.([]any)
		if !ok || len(d) != len(s) {
			return false
		}
		for i := range s {
			if !sameJSON(s[i], d[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		d, ok := decoded.(map[string]any)
		if !ok || len(d) != len(s) {
			return false
		}
		for k, v := range s {
			if !sameJSON(v, d[k]) {
				return false
			}
		}
		return true
	}
	return false
}

// FuzzArgsDepth: nestsDeeper, the depth check every call's arguments pass,
// agrees with encoding/json's own tokenizer on every valid JSON text:
// brackets inside strings, escaped quotes and backslashes do not count.
func FuzzArgsDepth(f *testing.F) {
	f.Add([]byte(`{"a":[1,{"b":[]}]}`), 2)
	f.Add([]byte(`{"s":"[[[[\"[[","t":"\\"}`), 1)
	f.Add([]byte(`[[[[[[0]]]]]]`), 5)
	f.Add([]byte(`["\\\"[[[[[[[[", [[[]]]]`), 3)
	f.Add([]byte(`"just a string [[["`), 0)
	f.Fuzz(func(t *testing.T, data []byte, limit int) {
		if !json.Valid(data) || limit < 0 || limit > 1000 {
			return
		}
		want := tokenDepth(data) > limit
		if got := nestsDeeper(data, limit); got != want {
			t.Fatalf("nestsDeeper(%q, %d) = %v, want %v", data, limit, got, want)
		}
	})
}

// tokenDepth is the deepest nesting of arrays and objects in valid JSON, as
// encoding/json's tokenizer sees it.
func tokenDepth(data []byte) int {
	dec := json.NewDecoder(bytes.NewReader(data))
	depth, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return deepest
		}
		switch tok {
		case json.Delim('['), json.Delim('{'):
			depth++
			deepest = max(deepest, depth)
		case json.Delim(']'), json.Delim('}'):
			depth--
		}
	}
}
