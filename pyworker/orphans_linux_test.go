package pyworker

import (
	"bufio"
	"context"
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

	"github.com/snakepit-go/snakepit/internal/testkit"
)

func TestParseWorkerArgs(t *testing.T) {
	host := []string{"--host-pid", "42", "--host-start", "777"}
	worker := func(extra ...string) []string {
		return append([]string{"/usr/bin/python3", "-u", "-m", "snakepit.worker", "--adapter", "a",
			"--run-id", "r1"}, extra...)
	}
	want := workerMark{RunID: "r1", Host: HostID{Pid: 42, Start: 777}}
	cases := []struct {
		name string
		argv []string
		ok   bool
	}{
		{"worker", worker(host...), true},
		{"inline values", worker("--host-pid=42", "--host-start=777"), true},
		{"no interpreter options", []string{"python", "-m", "snakepit.worker", "--run-id", "r1", "--host-pid", "42", "--host-start", "777"}, true},
		{"no host flags (an older release)", worker(), false},
		{"no run id", []string{"python", "-u", "-m", "snakepit.worker", "--host-pid", "42", "--host-start", "777"}, false},
		{"host pid 0", worker("--host-pid", "0", "--host-start", "777"), false},
		{"bad start", worker("--host-pid", "42", "--host-start", "x"), false},
		{"another module", []string{"python", "-u", "-m", "snakepit.other", "--run-id", "r1", "--host-pid", "42", "--host-start", "777"}, false},
		{"a script mentioning the module", []string{"python", "tool.py", "-m", "snakepit.worker", "--run-id", "r1", "--host-pid", "42", "--host-start", "777"}, false},
		{"empty", nil, false},
	}
	for _, c := range cases {
		got, ok := parseWorkerArgs(c.argv)
		if ok != c.ok || (ok && got != want) {
			t.Errorf("%s: got %+v %v, want ok=%v", c.name, got, ok, c.ok)
		}
	}
}

func TestCommandCarriesHostIdentity(t *testing.T) {
	self, err := selfHostID()
	if err != nil {
		t.Fatal(err)
	}
	cmd := Spec{Interpreter: Interpreter{Path: "/usr/bin/python3"}, Transport: Native{}, RunID: "r9", Capacity: 1}.command("/x.sock", "/x.stacks", newProcessMark("r9", 7))
	mark, ok := parseWorkerArgs(append([]string{cmd.Path}, cmd.Args...))
	if !ok || mark != (workerMark{RunID: "r9", Host: self}) {
		t.Fatalf("the worker's argv %q reads back as %+v %v, want run r9 of host %v", cmd.Args, mark, ok, self)
	}
	env := []byte(strings.Join(cmd.Env, "\x00"))
	pm, ok := markIn(env)
	if got, parsed := parseProcessMark(pm); !ok || pm != cmd.Mark || !parsed || got != (processMark{RunID: "r9", Seq: 7, Host: self}) {
		t.Fatalf("the worker's environment carries the mark %q (%v), want %q for run r9, worker 7 of host %v", pm, ok, cmd.Mark, self)
	}
	if !hostAlive(self) || hostAlive(HostID{Pid: self.Pid, Start: self.Start + 1}) {
		t.Fatal("this host must look alive, and its pid with another start time must not")
	}
}

// fakeWorker is a Python process whose command line is a snakepit worker's
// but whose module (a stand-in snakepit/worker.py) only starts a child in
// its process group and sleeps.
type fakeWorkerProc struct {
	cmd   *exec.Cmd
	child int // pid of the child in its process group
	done  chan struct{}
}

func startFakeWorker(t *testing.T, pkgDir string, host HostID) *fakeWorkerProc {
	t.Helper()
	interp, err := FindInterpreter(context.Background(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(interp.Path, "-u", "-m", "snakepit.worker", "--adapter", "none",
		"--run-id", "fake-"+strconv.Itoa(host.Pid), "--host-pid", strconv.Itoa(host.Pid),
		"--host-start", strconv.FormatUint(host.Start, 10))
	cmd.Env = append(os.Environ(), "PYTHONPATH="+pkgDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &fakeWorkerProc{cmd: cmd, done: make(chan struct{})}
	t.Cleanup(func() {
		select {
		case <-f.done:
		default: // not reaped yet, so the pid is still this child's
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-f.done
		}
	})
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- strings.TrimSpace(line)
		_ = cmd.Wait()
		close(f.done)
	}()
	select {
	case line := <-lines:
		if f.child, err = strconv.Atoi(line); err != nil {
			t.Fatalf("fake worker said %q", line)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the fake worker did not start its child within 30s")
	}
	return f
}

func writeFakeWorkerPackage(t *testing.T) string {
	dir := t.TempDir()
	pkg := filepath.Join(dir, "snakepit")
	if err := os.Mkdir(pkg, 0o700); err != nil {
		t.Fatal(err)
	}
	src := "import subprocess, sys, time\n" +
		"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n" +
		"print(child.pid, flush=True)\n" +
		"time.sleep(120)\n"
	for name, body := range map[string]string{"__init__.py": "", "worker.py": src} {
		if err := os.WriteFile(filepath.Join(pkg, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// deadHost starts a process, notes its identity, then kills and reaps it.
func deadHost(t *testing.T) (HostID, func()) {
	t.Helper()
	cmd := exec.Command("sleep", "120")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	st, err := ReadStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return HostID{Pid: cmd.Process.Pid, Start: st.Start}, func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
}

// childGone: the process is gone, a zombie, or no longer a python process
// (its pid reused).
func childGone(pid int) bool {
	st, err := ReadStat(pid)
	if err != nil || st.State == 'Z' || st.State == 'X' {
		return true
	}
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return !strings.Contains(string(cmdline), "time.sleep(120)")
}

// TestSweepKillsOrphansAndTheirGroupsOnly: workers whose host died, or
// whose host pid now belongs to another process (a reused pid), are killed
// with their process groups; a worker of a live host is not touched.
func TestSweepKillsOrphansAndTheirGroupsOnly(t *testing.T) {
	self, err := selfHostID()
	if err != nil {
		t.Fatal(err)
	}
	pkg := writeFakeWorkerPackage(t)
	live := startFakeWorker(t, pkg, self)
	reused := startFakeWorker(t, pkg, HostID{Pid: self.Pid, Start: self.Start + 1})
	host, kill := deadHost(t)
	orphan := startFakeWorker(t, pkg, host)
	kill() // the host dies; its worker stays

	rep, err := SweepOrphans(hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sweep: %+v", rep)
	for name, f := range map[string]*fakeWorkerProc{"orphan": orphan, "reused-pid orphan": reused} {
		select {
		case <-f.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s %d still runs after the sweep", name, f.cmd.Process.Pid)
		}
		if ws := f.cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("%s ended with %v, want SIGKILL", name, f.cmd.ProcessState)
		}
		testkit.WaitFor(t, name+"'s child (same process group) is gone", 5*time.Second, func() bool { return childGone(f.child) })
		if !slices.Contains(rep.Killed, f.cmd.Process.Pid) {
			// Only a concurrent sweep (another package's runtime starting) may beat ours.
			t.Logf("%s %d was killed, but not by this sweep", name, f.cmd.Process.Pid)
		}
	}
	if slices.Contains(rep.Killed, live.cmd.Process.Pid) || rep.Live < 1 {
		t.Fatalf("the sweep touched the worker of a live host: %+v", rep)
	}
	select {
	case <-live.done:
		t.Fatalf("the live host's worker died: %v", live.cmd.ProcessState)
	default:
	}
	if childGone(live.child) {
		t.Fatal("the live host's worker's child died")
	}
}

func TestSweepRunDirs(t *testing.T) {
	self, err := selfHostID()
	if err != nil {
		t.Fatal(err)
	}
	host, kill := deadHost(t)
	kill()
	root := t.TempDir()
	mk := func(name, owner string) string {
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Join(dir, "py", "snakepit"), 0o700); err != nil {
			t.Fatal(err)
		}
		if owner != "" {
			if err := os.WriteFile(filepath.Join(dir, ownerFileName), []byte(owner), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	ns, err := pidNamespace()
	if err != nil {
		t.Fatal(err)
	}
	dead := mk("snakepit-dead", host.String()+" "+ns+"\n")
	reused := mk("snakepit-reused", HostID{Pid: self.Pid, Start: self.Start + 7}.String()+" "+ns)
	ours := mk("snakepit-ours", "")
	if err := WriteOwner(ours); err != nil {
		t.Fatal(err)
	}
	keep := []string{ours, mk("snakepit-no-owner", ""), mk("snakepit-garbled", "not a host"),
		mk("snakepit-no-namespace", host.String()), // a pid without its namespace means nothing
		mk("snakepit-other-namespace", host.String()+" pid:[1]"),
		mk("other-dead", host.String()+" "+ns)}
	removed, err := SweepRunDirs(root, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if want := []string{dead, reused}; !slices.Equal(removed, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	for _, dir := range append(keep, dead, reused) {
		_, err := os.Stat(dir)
		if gone := os.IsNotExist(err); gone != slices.Contains(removed, dir) {
			t.Errorf("%s: gone=%v", dir, gone)
		}
	}
}

// TestKillMarkedKillsOnlyTheMark: killMarked kills a process carrying the
// mark (in a session of its own, as a child that called setsid) and its
// child, and leaves a process with another mark alone.
func TestKillMarkedKillsOnlyTheMark(t *testing.T) {
	mine, other := newProcessMark("killmarked-"+strconv.Itoa(os.Getpid()), 1), newProcessMark("killmarked-other", 2)
	start := func(mark processMark, script string) *exec.Cmd {
		cmd := exec.Command("sh", "-c", script)
		cmd.Env = append(os.Environ(), envProcessMark+"="+mark.String())
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
		return cmd
	}
	marked := start(mine, "sleep 300 & wait")
	spared := start(other, "exec sleep 300")
	waitMarked(t, mine, 2) // sh and its sleep
	killed, err := killMarked(func(_ int, m string) bool { return m == mine.String() })
	if err != nil {
		t.Fatal(err)
	}
	if len(killed) != 2 || !slices.Contains(killed, marked.Process.Pid) {
		t.Fatalf("killed %v, want sh %d and its sleep", killed, marked.Process.Pid)
	}
	if err := marked.Wait(); err == nil || marked.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the marked process ended with %v, want SIGKILL", err)
	}
	if err := spared.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the process with another mark was touched: %v", err)
	}
}

// waitMarked waits, bounded, until n live processes carry mark (a child
// the shell forks has its environment once it has run exec).
func waitMarked(t *testing.T, mark processMark, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		found := 0
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if m, ok := readProcessMark(pid); err == nil && ok && m == mark.String() {
				found++
			}
		}
		if found >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes carry %s, want %d", found, mark, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkKillEscapedNoMatch is the cost a worker's exit pays to look for
// descendants that left its process group: one scan of /proc that finds
// none (it grows with the number of processes on the machine).
func BenchmarkKillEscapedNoMatch(b *testing.B) {
	entries, _ := os.ReadDir("/proc")
	processes := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			processes++
		}
	}
	b.ReportMetric(float64(processes), "processes")
	for i := 0; i < b.N; i++ {
		killEscaped(newProcessMark("bench-no-such-run", uint64(i)).String())
	}
}
