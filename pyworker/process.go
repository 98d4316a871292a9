package pyworker

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/snakepit-go/snakepit/internal/signame"
)

// ExitStatus says how a worker process ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when the process was killed by a signal.
	Code int
	// Signal is the signal that killed the process, 0 when it exited.
	Signal syscall.Signal
	// OOM says, for a SIGKILL, whether the kernel's out-of-memory killer
	// did it, as far as the oom_kill counter of the worker's memory cgroup
	// tells (memory.events in cgroup v2, memory.oom_control in v1).
	OOM OOMVerdict
}

// OOMVerdict is what the kernel lets us know about an out-of-memory kill.
type OOMVerdict struct {
	// Known is false when it cannot be told (no memory cgroup counter
	// readable); then Killed is false and means nothing: never a guess.
	Known, Killed bool
	// Detail gives the evidence, or why there is none.
	Detail string
}

// Signaled reports whether a signal ended the process.
func (s ExitStatus) Signaled() bool { return s.Signal != 0 }

func (s ExitStatus) String() string {
	if s.Signaled() {
		msg := fmt.Sprintf("killed by signal %d (%s)", int(s.Signal), signame.Name(s.Signal))
		if s.OOM.Killed {
			msg += " from the kernel's out-of-memory killer"
		}
		return msg
	}
	return fmt.Sprintf("exit code %d", s.Code)
}

func exitStatusOf(state *os.ProcessState) ExitStatus {
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ExitStatus{Code: -1, Signal: ws.Signal()}
	}
	return ExitStatus{Code: state.ExitCode()}
}

// Command describes a process to start. Path is run directly, never through a
// shell.
type Command struct {
	Path string
	Args []string // not including Path
	Env  []string
	Dir  string
	// Mark is the process mark Env carries (SNAKEPIT_PROCESS_MARK), "" for
	// none. Every process started from this one inherits it; once this one
	// has exited, those of them still running are killed (Linux).
	Mark string
}

// Process is the seam around one OS process: the runtime only ever talks to a
// worker process through it.
type Process interface {
	Pid() int
	// Done is closed once the process has exited and been reaped.
	Done() <-chan struct{}
	// Status is valid after Done is closed.
	Status() ExitStatus
	// SignalGroup sends sig to the process's whole process group. Once the
	// process has exited, its group has already had SIGKILL (Linux): Done is
	// closed only after that.
	SignalGroup(sig syscall.Signal) error
	// CloseStdin closes the pipe the worker watches for its parent's death.
	CloseStdin()
}

// osProcess is a Process backed by exec.Cmd.
type osProcess struct {
	cmd     *exec.Cmd
	stdin   *os.File
	done    chan struct{}
	status  ExitStatus
	closeIn sync.Once
	oom     *oomWatch
	mark    string // Command.Mark
}

// pipes are the parent's ends of the child's standard streams and of its
// handshake pipe.
type pipes struct {
	stdin          *os.File
	stdout, stderr *os.File
	handshake      *os.File // read end of the child's fd 3
}

// startProcess starts c with its stdin, stdout and stderr connected to pipes,
// and the write end of one more pipe as its fd 3 (the handshake pipe). The
// child runs in its own process group and gets SIGKILL when its parent dies.
func startProcess(c Command) (*osProcess, *pipes, error) {
	child, parent, err := newPipes()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Env, cmd.Dir = c.Env, c.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = child[0], child[1], child[2]
	cmd.ExtraFiles = []*os.File{child[3]} // fd 3 (handshakeFD)
	cmd.SysProcAttr = sysProcAttr()
	err = spawn(cmd)
	closeAll(child[:]...) // the child holds its own copies now
	if err != nil {
		closeAll(parent.stdin, parent.stdout, parent.stderr, parent.handshake)
		return nil, nil, fmt.Errorf("start %s: %w", c.Path, err)
	}
	p := &osProcess{cmd: cmd, stdin: parent.stdin, done: make(chan struct{}), oom: newOOMWatch(cmd.Process.Pid), mark: c.Mark}
	go p.reap()
	return p, parent, nil
}

// newPipes makes the child's stdin, stdout, stderr and handshake pipes: the
// child's ends (stdin's read end, the others' write ends) and the parent's.
func newPipes() ([4]*os.File, *pipes, error) {
	var child, parent [4]*os.File
	for i := range child {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(child[:i]...)
			closeAll(parent[:i]...)
			return child, nil, err
		}
		child[i], parent[i] = w, r
		if i == 0 {
			child[i], parent[i] = r, w
		}
	}
	return child, &pipes{stdin: parent[0], stdout: parent[1], stderr: parent[2], handshake: parent[3]}, nil
}

// reap waits for the process to exit, kills what it leaves behind, then
// reaps it. While it is an unreaped zombie its pid, and the process group id
// it leads, cannot be anyone else's: the group is killed then, whether the
// worker exited by itself, was stopped or was killed.
func (p *osProcess) reap() {
	if pid := p.cmd.Process.Pid; awaitExit(pid) {
		_ = signalGroup(pid, syscall.SIGKILL)
		killEscaped(p.mark)
	}
	err := p.cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil || errors.As(err, &ee):
		p.status = exitStatusOf(p.cmd.ProcessState)
	default:
		p.status = ExitStatus{Code: -1}
	}
	if p.status.Signal == syscall.SIGKILL {
		p.status.OOM = p.oom.verdict()
	}
	p.CloseStdin()
	close(p.done)
}

func (p *osProcess) Pid() int              { return p.cmd.Process.Pid }
func (p *osProcess) Done() <-chan struct{} { return p.done }
func (p *osProcess) Status() ExitStatus    { <-p.done; return p.status }
func (p *osProcess) CloseStdin()           { p.closeIn.Do(func() { _ = p.stdin.Close() }) }
func (p *osProcess) SignalGroup(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil // reaped: the pid may already belong to someone else
	default:
	}
	return signalGroup(p.cmd.Process.Pid, sig)
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}
