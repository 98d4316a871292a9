package harness

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/pyworker"
)

// Memory is a process's memory (RSS, PSS, USS in bytes).
type Memory = pyworker.Memory

// ReadMemory reads pid's /proc/<pid>/smaps_rollup (Linux 4.14+).
func ReadMemory(pid int) (Memory, error) { return pyworker.ReadMemory(pid) }

// StartupKind is what a start-up measurement starts.
type StartupKind int

// Start-up kinds.
const (
	// Bare: python -c "import time; print('ready', flush=True); time.sleep(60)".
	Bare StartupKind = iota
	// BarePackage: Bare, importing the snakepit package first (what any
	// adapter imports to declare its tools).
	BarePackage
	// BareImports: Bare, importing the adapter module (echo_tools) first.
	BareImports
	// Worker: a worker started with pyworker.Launch, as the runtime starts one.
	Worker
)

// StartupTarget is one kind of process to start and measure.
type StartupTarget struct {
	Kind        StartupKind
	Interpreter pyworker.Interpreter
	Transport   pyworker.Transport // Worker only
}

// StartupSample is one start of a target.
type StartupSample struct {
	// Ready is from just before the process is spawned until it is ready:
	// for a worker, pyworker.Launch's duration (spawn, the READY line, connect
	// and the first health check); for a baseline, until its "ready" line is
	// read.
	Ready time.Duration
	// Memory once ready and then idle for the given time.
	Memory Memory
}

// Startup starts workers and baseline interpreters one at a time and
// measures them. Close it.
type Startup struct {
	dir, pkgDir, adapterDir string
	runID, token            string
	log                     hclog.Logger
	seq                     int
}

// NewStartup installs the worker package in a temporary directory.
// adapterDir "" means DefaultAdapterDir(); log nil means warnings to stderr.
func NewStartup(adapterDir string, log hclog.Logger) (*Startup, error) {
	if adapterDir == "" {
		adapterDir = DefaultAdapterDir()
	}
	if log == nil {
		log = hclog.New(&hclog.LoggerOptions{Name: "bench", Level: hclog.Warn, Output: os.Stderr})
	}
	dir, err := os.MkdirTemp("", "snakepit-startup-")
	if err != nil {
		return nil, err
	}
	pkgDir, err := pyworker.InstallPackage(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return &Startup{dir: dir, pkgDir: pkgDir, adapterDir: adapterDir, runID: randomHex(8), token: randomHex(32), log: log}, nil
}

// Close removes the temporary directory.
func (s *Startup) Close() { _ = os.RemoveAll(s.dir) }

// Measure starts t once, waits until it is ready, lets it idle for idle,
// reads its memory and kills it.
func (s *Startup) Measure(ctx context.Context, t StartupTarget, idle time.Duration) (StartupSample, error) {
	if t.Kind == Worker {
		return s.measureWorker(ctx, t, idle)
	}
	return s.measureBare(ctx, t, idle)
}

func (s *Startup) measureWorker(ctx context.Context, t StartupTarget, idle time.Duration) (StartupSample, error) {
	s.seq++
	id := "startup-" + strconv.Itoa(s.seq)
	spec, err := workerSpec(id, t.Interpreter, t.Transport, s.dir, s.pkgDir, s.adapterDir, s.runID, s.token, s.log.Named(id))
	if err != nil {
		return StartupSample{}, err
	}
	lctx, cancel := context.WithTimeout(ctx, snakepit.DefaultStartTimeout)
	defer cancel()
	t0 := time.Now()
	h, err := pyworker.Launch(lctx, spec)
	ready := time.Since(t0)
	if err != nil {
		return StartupSample{}, err
	}
	defer h.Kill()
	time.Sleep(idle)
	m, err := ReadMemory(h.Pid())
	return StartupSample{Ready: ready, Memory: m}, err
}

func (s *Startup) measureBare(ctx context.Context, t StartupTarget, idle time.Duration) (StartupSample, error) {
	script := "import time; print('ready', flush=True); time.sleep(60)"
	switch t.Kind {
	case BarePackage:
		script = "import snakepit; " + script
	case BareImports:
		script = "import " + Adapter + "; " + script
	}
	cmd := exec.Command(t.Interpreter.Path, "-c", script)
	// The worker's sys.path: the snakepit package, then the adapter's directory.
	cmd.Env = append(os.Environ(), "PYTHONPATH="+strings.Join([]string{s.pkgDir, s.adapterDir}, string(filepath.ListSeparator)))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return StartupSample{}, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return StartupSample{}, err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	line := make(chan error, 1)
	go func() {
		l, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && l != "ready\n" {
			err = fmt.Errorf("unexpected output %q", l)
		}
		line <- err
	}()
	var ready time.Duration
	select {
	case err := <-line:
		ready = time.Since(t0)
		if err != nil {
			return StartupSample{}, fmt.Errorf("%s -c: %w", t.Interpreter.Path, err)
		}
	case <-ctx.Done():
		return StartupSample{}, ctx.Err()
	}
	time.Sleep(idle)
	m, err := ReadMemory(cmd.Process.Pid)
	return StartupSample{Ready: ready, Memory: m}, err
}
