package snakepit_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/pyworker"
)

// The helper host: this test binary, run again with envHelperHost set, starts
// a runtime, prints its workers' pids, and blocks until it is killed.
const (
	envHelperHost       = "SNAKEPIT_TEST_HELPER_HOST"
	envHelperRuntimeDir = "SNAKEPIT_TEST_HELPER_RUNTIME_DIR"
	helperPidsPrefix    = "SNAKEPIT-HELPER-PIDS "
	hostKills           = 10
	orphanDeadline      = 2 * time.Second
)

func TestHelperHostProcess(t *testing.T) {
	if os.Getenv(envHelperHost) != "1" {
		t.Skip("the host process of TestHostSIGKILLLeavesNoOrphans; runs only when it starts it")
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "helper-host", Level: hclog.Debug, Output: os.Stderr})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rt, err := snakepit.Start(ctx, snakepit.Config{Logger: log, RuntimeDir: os.Getenv(envHelperRuntimeDir),
		Pools: []snakepit.PoolConfig{pool(t, "p", "echo_tools", 2)}})
	if err != nil {
		t.Fatal(err)
	}
	stats, err := rt.Stats(ctx, "p")
	if err != nil || len(stats) != 2 {
		t.Fatalf("Stats: %v %v", stats, err)
	}
	fmt.Printf("%s%s %d %d\n", helperPidsPrefix, rt.RunID(), stats[0].Pid, stats[1].Pid)
	time.Sleep(2 * time.Minute) // the test kills this process long before
	t.Fatal("the helper host was not killed")
}

// announcement collects a helper process's stdout and hands over the rest
// of its first line that starts with prefix.
type announcement struct {
	prefix string
	mu     sync.Mutex
	buf    bytes.Buffer
	line   chan string
	once   sync.Once
}

func (a *announcement) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.buf.Write(p)
	s := a.buf.String()
	if i := strings.Index(s, a.prefix); i >= 0 {
		if j := strings.IndexByte(s[i:], '\n'); j >= 0 {
			a.once.Do(func() { a.line <- s[i+len(a.prefix) : i+j] })
		}
	}
	return len(p), nil
}

// workerGone: /proc/<pid> is gone, or is a zombie (not our child: a worker's
// parent is the dead host), or now holds another command line (pid reused).
func workerGone(pid int, cmdline []byte) bool {
	now, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return err != nil || isZombie(strconv.Itoa(pid)) || !bytes.Equal(now, cmdline)
}

// killHostOnce starts a helper host, SIGKILLs it once its two workers are
// ready, and returns how long until both workers were gone.
func killHostOnce(t *testing.T, runtimeDir string) time.Duration {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHostProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envHelperHost+"=1", envHelperRuntimeDir+"="+runtimeDir)
	ann := &announcement{prefix: helperPidsPrefix, line: make(chan string, 1)}
	stderr := &logBuffer{}
	cmd.Stdout, cmd.Stderr, cmd.WaitDelay = ann, stderr, 5*time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill(); <-exited }() // on failure; a no-op once it is reaped
	var line string
	select {
	case line = <-ann.line:
	case err := <-exited:
		exited <- err
		t.Fatalf("the helper host exited before announcing its workers: %v\nstderr:\n%s", err, stderr)
	case <-time.After(60 * time.Second):
		t.Fatalf("the helper host did not announce its workers within 60s\nstderr:\n%s", stderr)
	}
	fields := strings.Fields(line)
	if len(fields) != 3 {
		t.Fatalf("helper announced %q", line)
	}
	runID, pids := fields[0], []int{}
	cmdlines := map[int][]byte{}
	for _, f := range fields[1:] {
		pid, _ := strconv.Atoi(f)
		cl, err := os.ReadFile(filepath.Join("/proc", f, "cmdline"))
		if err != nil || !bytes.Contains(cl, []byte(runID)) {
			t.Fatalf("worker %s is not a worker of run %s: %q %v", f, runID, cl, err)
		}
		pids, cmdlines[pid] = append(pids, pid), cl
	}
	killed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-exited
	exited <- err // for the deferred cleanup
	for {
		gone := 0
		for _, pid := range pids {
			if workerGone(pid, cmdlines[pid]) {
				gone++
			}
		}
		if gone == len(pids) {
			return time.Since(killed)
		}
		if time.Since(killed) > orphanDeadline {
			t.Fatalf("%d of the workers %v of the SIGKILLed host (%v) still run %s later", len(pids)-gone, pids, err, orphanDeadline)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHostSIGKILLLeavesNoOrphans: a host killed with SIGKILL (no chance to
// stop anything) leaves no Python worker behind; they are gone within
// orphanDeadline. The time it took is logged (median and max over the runs).
// Then the next start removes the run directories the dead hosts left.
func TestHostSIGKILLLeavesNoOrphans(t *testing.T) {
	runtimeDir := t.TempDir()
	took := make([]time.Duration, 0, hostKills)
	for i := 0; i < hostKills; i++ {
		took = append(took, killHostOnce(t, runtimeDir))
	}
	slices.Sort(took)
	t.Logf("SIGKILL of the host -> all its 2 workers gone: median %v, max %v, min %v (n=%d): %v",
		took[len(took)/2], took[len(took)-1], took[0], len(took), took)

	left, _ := filepath.Glob(filepath.Join(runtimeDir, "snakepit-*"))
	if len(left) == 0 {
		t.Fatal("the dead helper hosts left no run directory: the sweep has nothing to prove")
	}
	log, buf := testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rt, err := snakepit.Start(ctx, snakepit.Config{Logger: log, RuntimeDir: runtimeDir,
		Pools: []snakepit.PoolConfig{pool(t, "p", "echo_tools", 1)}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rt.Stop(ctx) }()
	now, _ := filepath.Glob(filepath.Join(runtimeDir, "snakepit-*"))
	for _, dir := range left {
		if slices.Contains(now, dir) {
			t.Fatalf("the run directory %s of a dead host survived the start-up sweep (now: %v)", dir, now)
		}
	}
	if len(now) != 1 {
		t.Fatalf("run directories after the sweep: %v, want only the new runtime's", now)
	}
	if want := fmt.Sprintf("orphan sweep: killed=0 killed_pids=[] dirs_removed=%d", len(left)); !strings.Contains(buf.String(), want) {
		t.Fatalf("the start-up log does not say %q", want)
	}
}

// TestSweepOrphansSparesLiveRuntimes: a worker left behind by a dead host (a
// real worker process whose --host-pid names a process that has exited) is
// killed by SweepOrphans; the workers of a runtime running in this process
// are not touched.
func TestSweepOrphansSparesLiveRuntimes(t *testing.T) {
	rt, _ := start(t, pool(t, "live", "echo_tools", 2))
	before := workerPids(t, rt)
	orphan := startOrphanWorker(t)

	log, _ := testLogger(t)
	rep, err := pyworker.SweepOrphans(log)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sweep: %+v", rep)
	select {
	case <-orphan.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the orphan %d still runs after the sweep", orphan.cmd.Process.Pid)
	}
	if ws := orphan.cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the orphan ended with %v, want SIGKILL", orphan.cmd.ProcessState)
	}
	if !slices.Contains(rep.Killed, orphan.cmd.Process.Pid) {
		t.Logf("the orphan was killed, but by a concurrent sweep (another runtime starting)")
	}
	for _, pid := range before {
		if slices.Contains(rep.Killed, pid) {
			t.Fatalf("the sweep killed %d, a worker of a live runtime", pid)
		}
	}
	if _, err := rt.Call(callCtx(t), "live", "echo", map[string]any{"value": 1}); err != nil {
		t.Fatal(err)
	}
	if after := workerPids(t, rt); !slices.Equal(before, after) {
		t.Fatalf("the live runtime's workers changed: %v, then %v", before, after)
	}
	if live := processesOfRun(t, rt.RunID()); len(live) != len(before) {
		t.Fatalf("processes of the live run: %v, want %v", live, before)
	}
}

func workerPids(t *testing.T, rt *snakepit.Runtime) []int {
	t.Helper()
	stats, err := rt.Stats(callCtx(t), "live")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, s := range stats {
		pids = append(pids, s.Pid)
	}
	slices.Sort(pids)
	return pids
}

type orphanProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// readyWriter signals when a worker's stdout carries its READY line.
type readyWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan struct{}
	once  sync.Once
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), "SNAKEPIT-READY ") {
		w.once.Do(func() { close(w.ready) })
	}
	return len(p), nil
}

// startOrphanWorker runs the worker's own command line (echo_tools, native)
// as a process whose host is a process that has already exited.
func startOrphanWorker(t *testing.T) *orphanProc {
	t.Helper()
	dead := exec.Command("sleep", "0")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	interp, err := pyworker.FindInterpreter(context.Background(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "sp-orphan-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	pkg, err := pyworker.InstallPackage(dir)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(interp.Path, "-u", "-m", "snakepit.worker", "--adapter", "echo_tools",
		"--transport", "native", "--socket", filepath.Join(dir, "o.sock"), "--worker-id", "orphan-1",
		"--run-id", "0rphan0rphan", "--capacity", "1",
		"--host-pid", strconv.Itoa(dead.Process.Pid), "--host-start", "1") // a start time no live process has
	cmd.Env = append(os.Environ(), "SNAKEPIT_TOKEN=orphan-token",
		"PYTHONPATH="+pkg+string(os.PathListSeparator)+adapterPath(t)[0])
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &readyWriter{ready: make(chan struct{})}
	stderr := &logBuffer{}
	cmd.Stdout, cmd.Stderr = out, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	o := &orphanProc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(o.done) }()
	t.Cleanup(func() {
		select {
		case <-o.done:
		default: // not reaped, so the pid is still this child's
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-o.done
		}
	})
	select {
	case <-out.ready:
	case <-o.done:
		t.Fatalf("the orphan worker exited before READY: %v\nstderr:\n%s", cmd.ProcessState, stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("the orphan worker was not ready within 30s\nstderr:\n%s", stderr)
	}
	return o
}
