package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/telemetry"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// inspect runs "snakepit inspect args..." in-process and returns its stdout,
// stderr and exit status.
func inspect(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, append([]string{"inspect"}, args...), &out, &errOut)
	t.Logf("exit %d, stderr:\n%s\nstdout:\n%s", code, errOut.String(), out.String())
	return out.String(), errOut.String(), code
}

// startAdminRuntime starts a runtime with its admin endpoint on a free
// loopback port and two pools of echo_tools: p (2 workers), which serves
// calls calls of echo, and idle (4 workers, never called: the inspector's
// idle-capacity rule fires on it).
func startAdminRuntime(t *testing.T, calls int) *snakepit.Runtime {
	t.Helper()
	dir, err := filepath.Abs(adapterDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rt, err := snakepit.Start(ctx, snakepit.Config{
		Logger:    hclog.NewNullLogger(),
		AdminAddr: ":0",
		Pools: []snakepit.PoolConfig{
			{Name: "p", Adapter: "echo_tools", Size: 2, PythonPath: []string{dir}},
			{Name: "idle", Adapter: "echo_tools", Size: 4, PythonPath: []string{dir}},
		},
	})
	if err != nil {
		t.Fatalf("start runtime: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := rt.Stop(ctx); err != nil {
			t.Errorf("stop runtime: %v", err)
		}
	})
	for i := range calls {
		if _, err := rt.Call(ctx, "p", "echo", map[string]any{"value": i}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	return rt
}

func TestInspect(t *testing.T) {
	rt := startAdminRuntime(t, 6)
	addr := rt.AdminAddr()
	if addr == "" {
		t.Fatal("runtime has no admin address")
	}

	t.Run("json", func(t *testing.T) {
		out, _, code := inspect(t, "--addr", addr, "--format", "json")
		if code != exitOK {
			t.Fatalf("exit status %d, want %d", code, exitOK)
		}
		var rep telemetry.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("output is not a report: %v", err)
		}
		if len(rep.Pools) != 2 || rep.Pools[0].Name != "p" || rep.Pools[1].Name != "idle" {
			t.Fatalf("pools %+v, want p and idle", rep.Pools)
		}
		p := rep.Pools[0]
		if p.Size != 2 || p.Ready != 2 || len(p.Workers) != 2 {
			t.Errorf("pool p: size %d, ready %d, %d workers; want 2, 2, 2", p.Size, p.Ready, len(p.Workers))
		}
		if p.Requests < 6 {
			t.Errorf("pool p served %d requests, want at least 6", p.Requests)
		}
		if p.Uptime <= 0 || p.Workers[0].Pid <= 0 || rep.Time.IsZero() {
			t.Errorf("uptime %s, first pid %d, time %s: want them set", p.Uptime, p.Workers[0].Pid, rep.Time)
		}
		// the re-encoded report keeps the schema's keys, indented
		for _, key := range []string{`"pools": [`, `"uptime_seconds": `, `"rss_bytes": `, `"saturation": {`, `"recommendations": [`} {
			if !strings.Contains(out, key) {
				t.Errorf("JSON lacks %s", key)
			}
		}
		if recs := rep.Pools[1].Recommendations; len(recs) != 1 || recs[0].Rule != "idle-capacity" {
			t.Errorf("pool idle's recommendations %+v, want idle-capacity", recs)
		}
	})

	t.Run("pool filter", func(t *testing.T) {
		out, _, code := inspect(t, "--addr", addr, "--format", "json", "--pool", "idle")
		var rep telemetry.Report
		if code != exitOK || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Pools) != 1 || rep.Pools[0].Name != "idle" {
			t.Errorf("exit status %d, pools %+v; want %d, just idle", code, rep.Pools, exitOK)
		}
	})

	t.Run("table golden", func(t *testing.T) {
		out, _, code := inspect(t, "--addr", addr, "--format", "table", "--detailed", "--recommendations", "--color", "never")
		if code != exitOK {
			t.Fatalf("exit status %d, want %d", code, exitOK)
		}
		if strings.Contains(out, "\x1b[") {
			t.Error("--color never printed an ANSI escape")
		}
		checkGolden(t, "inspect_table.golden", normaliseInspectTable(out))
	})

	t.Run("color always", func(t *testing.T) {
		out, _, code := inspect(t, "--addr", addr, "--color", "always")
		if code != exitOK {
			t.Fatalf("exit status %d, want %d", code, exitOK)
		}
		if !strings.Contains(out, "\x1b[32m0%\x1b[0m") {
			t.Error("--color always: no green utilisation (ANSI escape) in the table")
		}
	})

	t.Run("color auto off a terminal", func(t *testing.T) {
		out, _, code := inspect(t, "--addr", addr)
		if code != exitOK || strings.Contains(out, "\x1b[") {
			t.Errorf("exit status %d (want %d); ANSI escape in output to a buffer: %v", code, exitOK, strings.Contains(out, "\x1b["))
		}
	})

	t.Run("unknown pool", func(t *testing.T) {
		out, stderr, code := inspect(t, "--addr", addr, "--pool", "nope")
		if code != exitFailed {
			t.Errorf("exit status %d, want %d", code, exitFailed)
		}
		if !strings.Contains(stderr, `no pool "nope"`) || out != "" {
			t.Errorf("stderr lacks the server's 404 message, or stdout is not empty")
		}
	})
}

func TestInspectNoEndpoint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	out, stderr, code := inspect(t, "--addr", addr)
	if code != exitFailed {
		t.Errorf("exit status %d, want %d", code, exitFailed)
	}
	want := fmt.Sprintf("snakepit: no admin endpoint at %s: start the runtime with Config.AdminAddr set (e.g. \":9464\") or pass --addr\n", addr)
	if stderr != want || out != "" {
		t.Errorf("stderr %q, want %q (and no stdout)", stderr, want)
	}
}

func TestInspectAddrFromEnvironment(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv(envAdminAddr, addr)
	_, stderr, code := inspect(t)
	if code != exitFailed || !strings.Contains(stderr, "no admin endpoint at "+addr+":") {
		t.Errorf("exit status %d (want %d); stderr does not name $%s's address %s", code, exitFailed, envAdminAddr, addr)
	}
}

// fakeEndpoint serves body with status at /inspect.
func fakeEndpoint(t *testing.T, status int, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/inspect" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestInspectBadJSON(t *testing.T) {
	addr := fakeEndpoint(t, http.StatusOK, `{"time": "2025-01-01T00:00:00Z", "pools": [`)
	out, stderr, code := inspect(t, "--addr", addr)
	if code != exitFailed {
		t.Errorf("exit status %d, want %d", code, exitFailed)
	}
	if !strings.Contains(stderr, "answered with bad JSON") || out != "" {
		t.Errorf("stderr does not say the JSON is bad, or stdout is not empty")
	}
}

func TestInspectServerError(t *testing.T) {
	addr := fakeEndpoint(t, http.StatusServiceUnavailable, "snakepit: inspect: runtime stopped\n")
	_, stderr, code := inspect(t, "--addr", addr)
	if code != exitFailed || !strings.Contains(stderr, "503 Service Unavailable: snakepit: inspect: runtime stopped") {
		t.Errorf("exit status %d (want %d), stderr lacks the status and message", code, exitFailed)
	}
}

func TestInspectTimeout(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	_, stderr, code := inspect(t, "--addr", strings.TrimPrefix(srv.URL, "http://"), "--timeout", "200ms")
	if code != exitFailed || !strings.Contains(stderr, "within 200ms (--timeout)") {
		t.Errorf("exit status %d (want %d), stderr does not say it timed out", code, exitFailed)
	}
}

func TestInspectEmptyReport(t *testing.T) {
	addr := fakeEndpoint(t, http.StatusOK, `{"time": "2025-01-02T03:04:05Z", "pools": []}`)
	out, _, code := inspect(t, "--addr", "http://"+addr+"/")
	if code != exitOK || out != "snakepit inspect at 2025-01-02T03:04:05Z\n\nno pools\n" {
		t.Errorf("exit status %d (want %d), output %q", code, exitOK, out)
	}
}

func TestInspectBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--format", "yaml"},
		{"--color", "sometimes"},
		{"--timeout", "0s"},
		{"--timeout", "soon"},
		{"--addr", "localhost"},
		{"--no-such-flag"},
		{"extra-argument"},
	} {
		_, stderr, code := inspect(t, args...)
		if code != exitUsage || !strings.HasPrefix(stderr, "snakepit: ") {
			t.Errorf("%v: exit status %d (want %d), stderr %q", args, code, exitUsage, stderr)
		}
	}
}

func TestUseColor(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	var buf bytes.Buffer
	cases := []struct {
		mode string
		w    any
		env  func(string) string
		want bool
	}{
		{"always", &buf, env("NO_COLOR", "1"), true},
		{"never", &buf, env(), false},
		{"auto", &buf, env(), false}, // not a terminal
		{"auto", os.Stdout, env("NO_COLOR", "1"), false},
		{"auto", os.Stdout, env("TERM", "dumb"), false},
	}
	for _, c := range cases {
		w := c.w.(interface{ Write([]byte) (int, error) })
		if got := useColor(c.mode, w, c.env); got != c.want {
			t.Errorf("useColor(%s, %T) = %v, want %v", c.mode, c.w, got, c.want)
		}
	}
}

func TestNormaliseAdminAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9464":        "127.0.0.1:9464",
		":9464":                 "127.0.0.1:9464",
		"http://10.0.0.5:9464/": "10.0.0.5:9464",
		"localhost:1":           "localhost:1",
		"[::1]:9464":            "[::1]:9464",
		" http://[::1]:9464 ":   "[::1]:9464",
	} {
		if got, err := normaliseAdminAddr(in); err != nil || got != want {
			t.Errorf("normaliseAdminAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// The volatile parts of the table: they change from run to run (time, pids,
// uptimes, memory, how the calls spread over the workers) or with the
// interpreter the runtime finds (its version).
var (
	reTime   = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)
	rePython = regexp.MustCompile(`\b3\.\d+\.\d+t?\b`)
	reGap    = regexp.MustCompile(` {2,}`) // between table cells
)

// volatileWorkerCells are the columns of a worker row that vary: PID,
// UPTIME, REQUESTS, RSS, PSS.
var volatileWorkerCells = map[int]string{1: "<pid>", 5: "<uptime>", 6: "<n>", 8: "<mem>", 9: "<mem>"}

// normaliseInspectTable replaces the volatile parts of a table with
// placeholders, then lines the table columns up again (their widths follow
// the widest cell, which may be a volatile one).
func normaliseInspectTable(s string) string {
	s = reTime.ReplaceAllString(s, "<time>")
	s = rePython.ReplaceAllString(s, "<py>")
	lines := strings.Split(s, "\n")
	var out []string
	for i := 0; i < len(lines); {
		l := lines[i]
		body := strings.TrimLeft(l, " ")
		indent := l[:len(l)-len(body)]
		if !strings.HasPrefix(body, "POOL  ") && !strings.HasPrefix(body, "WORKER  ") {
			out = append(out, l)
			i++
			continue
		}
		// a table: its header and the rows under it at the same indent
		workers := strings.HasPrefix(body, "WORKER  ")
		var rows [][]string
		for ; i < len(lines) && strings.HasPrefix(lines[i], indent) && strings.TrimSpace(lines[i]) != "" &&
			!strings.HasPrefix(lines[i][len(indent):], " "); i++ {
			row := strings.Split(reGap.ReplaceAllString(lines[i][len(indent):], "  "), "  ")
			if workers && len(rows) > 0 { // not the header
				for j, placeholder := range volatileWorkerCells {
					if j < len(row) {
						row[j] = placeholder
					}
				}
			}
			rows = append(rows, row)
		}
		out = append(out, alignRows(indent, rows)...)
	}
	return strings.Join(out, "\n")
}

// alignRows pads each column to its widest cell, two spaces apart, as
// telemetry.RenderTable does.
func alignRows(indent string, rows [][]string) []string {
	var width []int
	for _, r := range rows {
		for j, c := range r {
			if j == len(width) {
				width = append(width, 0)
			}
			width[j] = max(width[j], utf8.RuneCountInString(c))
		}
	}
	out := make([]string, len(rows))
	for i, r := range rows {
		var b strings.Builder
		b.WriteString(indent)
		for j, c := range r {
			b.WriteString(c)
			if j < len(r)-1 {
				b.WriteString(strings.Repeat(" ", width[j]-utf8.RuneCountInString(c)+2))
			}
		}
		out[i] = b.String()
	}
	return out
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestInspect ./cmd/snakepit -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("table differs from %s (normalised; -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
