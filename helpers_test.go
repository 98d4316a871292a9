package snakepit_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/internal/testkit"
)

// logBuffer collects a runtime's logs; they are printed when a test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger(t *testing.T) (hclog.Logger, *logBuffer) {
	buf := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("runtime logs:\n%s", buf.String())
		}
	})
	return hclog.New(&hclog.LoggerOptions{Name: "snakepit", Level: hclog.Debug, Output: buf}), buf
}

func adapterPath(t *testing.T) []string {
	dir, err := filepath.Abs("testdata/pyadapters")
	if err != nil {
		t.Fatal(err)
	}
	return []string{dir}
}

// EnvFreeThreadedPython names a free-threaded CPython (3.13t) to run the
// native-transport tests on too; `make test` sets it after `make python-ft`.
const EnvFreeThreadedPython = "SNAKEPIT_TEST_PYTHON_FT"

// testTransport is one way of running workers that the suite covers.
type testTransport struct {
	name      string // subtest name
	transport string // PoolConfig.Transport
	python    string // PoolConfig.Python ("" = found as usual)
}

func testTransports() []testTransport {
	return []testTransport{
		{name: "native", transport: "native"},
		{name: "grpc", transport: "grpc"},
		{name: "native-3.13t", transport: "native", python: os.Getenv(EnvFreeThreadedPython)},
	}
}

// eachTransport runs body once per transport, as subtests named after them;
// pool reads the transport back from the subtest's name.
func eachTransport(t *testing.T, body func(t *testing.T)) {
	for _, tt := range testTransports() {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "native-3.13t" && tt.python == "" {
				t.Skipf("no free-threaded Python: set $%s (make test does, after make python-ft)", EnvFreeThreadedPython)
			}
			body(t)
		})
	}
}

func transportOf(t *testing.T) testTransport {
	parts := strings.Split(t.Name(), "/")
	for _, tt := range testTransports() {
		if len(parts) > 1 && parts[1] == tt.name {
			return tt
		}
	}
	return testTransports()[0]
}

// pool returns a PoolConfig for the test adapters, on the transport of the
// running subtest.
func pool(t *testing.T, name, adapter string, size int) snakepit.PoolConfig {
	tt := transportOf(t)
	return snakepit.PoolConfig{Name: name, Adapter: adapter, Size: size, PythonPath: adapterPath(t),
		Transport: tt.transport, Python: tt.python,
		Restart: snakepit.RestartPolicy{InitialBackoff: 10 * time.Millisecond}}
}

// start starts a runtime that is stopped when the test ends.
func start(t *testing.T, pools ...snakepit.PoolConfig) (*snakepit.Runtime, *logBuffer) {
	t.Helper()
	log, buf := testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rt, err := snakepit.Start(ctx, snakepit.Config{Pools: pools, Logger: log})
	if err != nil {
		t.Fatalf("Start: %v\nlogs:\n%s", err, buf.String())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := rt.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return rt, buf
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// processesOfRun lists the pids of live processes whose command line holds
// the run id: the runtime's Python workers.
func processesOfRun(t *testing.T, runID string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(string(cmdline), runID) && !isZombie(e.Name()) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func isZombie(pid string) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return true
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// waitFor polls cond until it holds or the deadline passes: a wait for a
// state the runtime reaches by itself, never a guess at how long it takes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, what, within, cond)
}

func health(t *testing.T, rt *snakepit.Runtime, name string) snakepit.PoolHealth {
	t.Helper()
	hs, err := rt.Health(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if h.Name == name {
			return h
		}
	}
	t.Fatalf("no pool %q in Health", name)
	return snakepit.PoolHealth{}
}
