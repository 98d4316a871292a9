package snakepit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/pyworker"
)

// descendantDeadline bounds the wait for a killed descendant to be gone.
const descendantDeadline = 10 * time.Second

// sleeper is a `sleep 300` a tool started, pinned by a pidfd: the pidfd
// becomes readable when that process exits, whoever its parent is now (a
// zombie of init's is gone; it is never ours).
type sleeper struct {
	pid, fd int
	what    string
}

func pinSleeper(t *testing.T, pid int, what string) *sleeper {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	t.Cleanup(func() {
		_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) // a no-op once it is gone
		_ = unix.Close(fd)
	})
	// The pidfd names the process the pid had when it was opened: is it the
	// sleep? Popen may return while the child's exec is still under way
	// (vfork), so wait, bounded, until exec has got as far as the name.
	deadline := time.Now().Add(5 * time.Second)
	for {
		cl, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		switch {
		case err == nil && bytes.Equal(cl, []byte("sleep\x00300\x00")):
			return &sleeper{pid: pid, fd: fd, what: what}
		case err != nil || time.Now().After(deadline):
			t.Fatalf("process %d is not the tool's sleep 300: %q %v", pid, cl, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// startSleeper has a tool of pool p start `sleep 300`, in the worker's
// process group or (newSession) in a session of its own.
func startSleeper(t *testing.T, rt *snakepit.Runtime, p string, newSession bool) *sleeper {
	t.Helper()
	res, err := rt.Call(callCtx(t), p, "spawn_sleeper", map[string]any{"new_session": newSession})
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := res.Decode(&pid); err != nil {
		t.Fatal(err)
	}
	what := "the child in the worker's process group"
	if newSession {
		what = "the child in a session of its own (setsid)"
	}
	return pinSleeper(t, pid, what)
}

// running reports whether the process has not exited yet.
func (s *sleeper) running() bool {
	n, err := unix.Poll([]unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}, 0)
	return err == nil && n == 0
}

// waitGone waits, up to descendantDeadline, until the process has exited.
func (s *sleeper) waitGone(t *testing.T, after string) {
	t.Helper()
	deadline := time.Now().Add(descendantDeadline)
	for {
		fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds()))
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			t.Fatalf("poll the pidfd of %d: %v", s.pid, err)
		case n == 0:
			t.Fatalf("after %s, %s (pid %d) still runs %s later", after, s.what, s.pid, descendantDeadline)
		}
		return
	}
}

// workerEnding is one of the ways a worker ends; a replacement follows
// when replaced is true.
type workerEnding struct {
	name     string
	replaced bool
	tune     func(p *snakepit.PoolConfig)
	end      func(t *testing.T, rt *snakepit.Runtime)
}

func workerEndings() []workerEnding {
	return []workerEnding{
		{name: "runtime Stop", end: func(t *testing.T, rt *snakepit.Runtime) {
			if err := rt.Stop(callCtx(t)); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "Recycle", replaced: true, end: func(t *testing.T, rt *snakepit.Runtime) {
			if err := rt.Recycle(callCtx(t), "p", "p-0"); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "crash (os._exit)", replaced: true, end: func(t *testing.T, rt *snakepit.Runtime) {
			if _, err := rt.Call(callCtx(t), "p", "crash", nil); !errors.Is(err, snakepit.ErrWorkerCrashed) {
				t.Fatalf("crash: %v, want ErrWorkerCrashed", err)
			}
		}},
		{name: "SIGKILL of the worker", replaced: true, end: func(t *testing.T, rt *snakepit.Runtime) {
			if err := syscall.Kill(callPid(t, rt, "p"), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "kill for a hang", replaced: true,
			tune: func(p *snakepit.PoolConfig) { p.Watchdog = snakepit.WatchdogPolicy{HangGrace: 300 * time.Millisecond} },
			end: func(t *testing.T, rt *snakepit.Runtime) {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				defer cancel()
				if _, err := rt.Call(ctx, "p", "sleep", map[string]any{"seconds": 300}); !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("stuck call: %v, want DeadlineExceeded", err)
				}
			}},
	}
}

// TestNoDescendantOutlivesItsWorker (issue 13): whichever way a worker ends
// — the runtime's Stop, a recycle, a crash, a SIGKILL from outside, a kill
// for a hang — the processes its tools started end with it: one in its
// process group, and one that left the group for a session of its own.
func TestNoDescendantOutlivesItsWorker(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T) {
		for _, e := range workerEndings() {
			t.Run(e.name, func(t *testing.T) {
				p := pool(t, "p", "child_tools", 1)
				if e.tune != nil {
					e.tune(&p)
				}
				rt, _ := start(t, p)
				before := callPid(t, rt, "p")
				children := []*sleeper{startSleeper(t, rt, "p", false), startSleeper(t, rt, "p", true)}
				e.end(t, rt)
				for _, c := range children {
					c.waitGone(t, e.name)
				}
				if e.replaced {
					// A call right after the kill may still reach the dying worker.
					res, err := rt.Call(callCtx(t), "p", "pid", nil, snakepit.Idempotent(3))
					var after int
					if err == nil {
						err = res.Decode(&after)
					}
					if err != nil || after == before {
						t.Fatalf("worker %d was not replaced: %d %v", before, after, err)
					}
				}
			})
		}
	})
}

// The descendant host: this test binary, run again, starts a runtime whose
// worker starts two sleepers, prints their pids and blocks until killed.
const (
	envDescendantHost          = "SNAKEPIT_TEST_DESCENDANT_HOST"
	envDescendantHostTransport = "SNAKEPIT_TEST_DESCENDANT_HOST_TRANSPORT"
	envDescendantHostPython    = "SNAKEPIT_TEST_DESCENDANT_HOST_PYTHON"
	descendantPidsPrefix       = "SNAKEPIT-DESCENDANT-PIDS "
)

func TestDescendantHostProcess(t *testing.T) {
	if os.Getenv(envDescendantHost) != "1" {
		t.Skip("the host process of TestSweepKillsWhatDeadHostsWorkersLeft; runs only when it starts it")
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "descendant-host", Level: hclog.Debug, Output: os.Stderr})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := pool(t, "p", "child_tools", 1)
	p.Transport, p.Python = os.Getenv(envDescendantHostTransport), os.Getenv(envDescendantHostPython)
	rt, err := snakepit.Start(ctx, snakepit.Config{Logger: log, Pools: []snakepit.PoolConfig{p}})
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, newSession := range []bool{false, true} {
		res, err := rt.Call(ctx, "p", "spawn_sleeper", map[string]any{"new_session": newSession})
		var pid int
		if err == nil {
			err = res.Decode(&pid)
		}
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, strconv.Itoa(pid))
	}
	fmt.Printf("%s%s\n", descendantPidsPrefix, strings.Join(pids, " "))
	time.Sleep(2 * time.Minute) // the test kills this process long before
	t.Fatal("the descendant host was not killed")
}

// TestSweepKillsWhatDeadHostsWorkersLeft (issue 13): a host killed with
// SIGKILL takes its workers with it, but not what their tools started (a
// forked child keeps no parent-death signal). The next start-up sweep
// finds those by the process mark in their environment, naming a host that
// is gone, and kills them: the one in the worker's process group and the
// one in a session of its own.
func TestSweepKillsWhatDeadHostsWorkersLeft(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		tt := transportOf(t)
		cmd := exec.Command(os.Args[0], "-test.run=^TestDescendantHostProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), envDescendantHost+"=1", envDescendantHostTransport+"="+tt.transport,
			envDescendantHostPython+"="+tt.python)
		children := runDescendantHost(t, cmd)
		for _, c := range children {
			if !c.running() {
				t.Fatalf("%s (pid %d) ended with its host: nothing left for the sweep to prove", c.what, c.pid)
			}
		}
		log, _ := testLogger(t)
		rep, err := pyworker.SweepOrphans(log)
		if err != nil {
			t.Logf("sweep errors (other users' processes, ones that exited meanwhile): %v", err)
		}
		for _, c := range children {
			c.waitGone(t, "the start-up sweep")
			if !slices.Contains(rep.Descendants, c.pid) {
				t.Logf("%d is gone, but another sweep (a runtime starting meanwhile) killed it: %+v", c.pid, rep)
			}
		}
	})
}

// runDescendantHost starts cmd, waits for the pids it announces, pins them,
// then kills cmd with SIGKILL and reaps it.
func runDescendantHost(t *testing.T, cmd *exec.Cmd) []*sleeper {
	t.Helper()
	ann := &announcement{prefix: descendantPidsPrefix, line: make(chan string, 1)}
	stderr := &logBuffer{}
	cmd.Stdout, cmd.Stderr, cmd.WaitDelay = ann, stderr, 5*time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill(); <-exited }() // a no-op once reaped
	var line string
	select {
	case line = <-ann.line:
	case err := <-exited:
		exited <- err
		t.Fatalf("the descendant host exited before announcing: %v\nstderr:\n%s", err, stderr)
	case <-time.After(60 * time.Second):
		t.Fatalf("the descendant host announced nothing within 60s\nstderr:\n%s", stderr)
	}
	var children []*sleeper
	for i, f := range strings.Fields(line) {
		pid, _ := strconv.Atoi(f)
		children = append(children, pinSleeper(t, pid, []string{"the child in the worker's process group",
			"the child in a session of its own (setsid)"}[i%2]))
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-exited
	exited <- err
	return children
}
