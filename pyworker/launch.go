package pyworker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/snakepit-go/snakepit/pyworker/pb"
)

// ProtocolVersion is the wire protocol version this runtime speaks.
const ProtocolVersion = int32(pb.ProtocolVersion_PROTOCOL_VERSION_CURRENT)

// Spec is everything needed to start one worker process.
type Spec struct {
	ID              string // worker id, for logs and process marking
	Adapter         string // "pkg.module" or "pkg.module:Class"
	Interpreter     Interpreter
	Transport       Transport
	RunDir          string   // private (0700) directory for sockets
	PackageDir      string   // directory holding the snakepit package
	PythonPath      []string // extra sys.path entries, before $PYTHONPATH
	Env             []string // extra KEY=VALUE pairs
	Dir             string   // working directory ("" = the host's)
	RunID           string   // marks every process of one runtime
	Token           string   // secret required on every call
	Capacity        int      // concurrent calls the worker runs
	Profile         string   // "process" or "thread" (--profile)
	ThreadChecks    bool     // run the thread-safety checker (--thread-checks)
	MaxMessageBytes int
	Callbacks       CallbackFunc // serves the callbacks its tools make (nil: none)
	Logger          hclog.Logger
	Processes       *ProcessSet // every started process is added here
}

// Handle is a running, ready worker process and its connection.
type Handle struct {
	Proc   Process
	Conn   Conn
	Python string // version reported by the worker
	// Health is the worker's answer to its first health check (GIL state).
	Health    *pb.HealthReply
	stackFile string // where the worker dumps its stacks on SIGUSR1
	stderr    *stderrLogger
	// The worker's stdout and stderr, each read to its end by a goroutine.
	stdoutOut, stderrOut *outputStream
	began                time.Time // when the process was started
	stop                 sync.Once
}

// Pid is the worker's OS process id.
func (h *Handle) Pid() int { return h.Proc.Pid() }

// StderrTail returns the last lines the worker wrote to stderr.
func (h *Handle) StderrTail() string { return h.stderr.Tail() }

// stderrDrain bounds the wait for a dead worker's last stderr lines (a child
// it left behind may hold the pipe open).
const stderrDrain = 250 * time.Millisecond

// FinalStderrTail is StderrTail once the process has exited: it first waits
// (up to a quarter second) until its stderr was read to the end, so the
// last words of a crash (a fatal error, a traceback) are in it. It blocks:
// call it from a goroutine.
func (h *Handle) FinalStderrTail() string {
	waitAllClosed(stderrDrain, h.stderrOut.done)
	return h.stderr.Tail()
}

// waitAllClosed waits until every channel is closed, or d has passed.
func waitAllClosed(d time.Duration, chans ...<-chan struct{}) {
	t := time.NewTimer(d)
	defer t.Stop()
	for _, c := range chans {
		select {
		case <-c:
		case <-t.C:
			return
		}
	}
}

var socketSeq atomic.Uint64

// Launch starts a worker and returns it once it has completed the handshake
// and answered a health check. Named steps: spawn, handshake, connect, ready.
// If ctx ends first the process is killed.
func Launch(ctx context.Context, s Spec) (*Handle, error) {
	seq := socketSeq.Add(1)
	base := filepath.Join(s.RunDir, "w"+strconv.FormatUint(seq, 10))
	sock, stacks := base+".sock", base+".stacks"
	proc, pipes, err := startProcess(s.command(sock, stacks, newProcessMark(s.RunID, seq)))
	if err != nil {
		return nil, err
	}
	h := startOutput(s, proc, pipes, stacks)
	hello, err := handshake(ctx, s, proc, pipes.handshake, h)
	if err == nil {
		h.Python = hello.Python
		h.Conn, h.Health, err = connect(ctx, s, sock)
		if err != nil && ctx.Err() != nil {
			err = h.startTimeout(ctx, s, "the connection and first health check", err)
		}
	}
	if err != nil {
		h.Kill()
		return nil, err
	}
	return h, nil
}

// startOutput makes the worker's Handle and starts reading its stdout (every
// line logged at INFO: the handshake has a pipe of its own) and its stderr.
// The process set learns of it here, and counts it as ended once it is
// reaped and its output read to the end (at most stderrDrain later).
func startOutput(s Spec, proc Process, p *pipes, stacks string) *Handle {
	h := &Handle{Proc: proc, stackFile: stacks, stderr: &stderrLogger{log: s.Logger}, began: time.Now()}
	h.stdoutOut = newOutputStream(func(line string) { s.Logger.Info(line, "stream", "stdout") })
	h.stderrOut = newOutputStream(h.stderr.line)
	go h.stdoutOut.readFrom(p.stdout)
	go h.stderrOut.readFrom(p.stderr)
	if s.Processes != nil {
		ended := make(chan struct{})
		go func() {
			<-proc.Done()
			waitAllClosed(stderrDrain, h.stdoutOut.done, h.stderrOut.done)
			close(ended)
		}()
		s.Processes.add(proc, ended)
	}
	return h
}

func (s Spec) command(sock, stacks string, mark processMark) Command {
	args := []string{"-u", "-m", "snakepit.worker",
		"--adapter", s.Adapter, "--transport", s.Transport.Name(), "--socket", sock, "--stack-file", stacks,
		"--worker-id", s.ID, "--run-id", s.RunID, "--capacity", strconv.Itoa(s.Capacity),
		"--watch-stdin", flagHandshakeFD, strconv.Itoa(handshakeFD)}
	args = append(args, hostArgs()...) // lets a later start's sweep tell whether we are gone
	if s.Profile != "" {
		args = append(args, "--profile", s.Profile)
	}
	if s.ThreadChecks {
		args = append(args, "--thread-checks")
	}
	return Command{Path: s.Interpreter.Path, Args: args, Env: append(s.environ(), envProcessMark+"="+mark.String()),
		Dir: s.Dir, Mark: mark.String()}
}

// environ is the host's environment less what names another runtime's
// process (the token, a process mark inherited from a worker that started
// this host), with the worker's settings and Spec.Env added.
func (s Spec) environ() []string {
	path := append([]string{s.PackageDir}, s.PythonPath...)
	env := make([]string, 0, len(os.Environ())+8)
	for _, kv := range os.Environ() {
		switch k, v, _ := strings.Cut(kv, "="); k {
		case "PYTHONPATH":
			if v != "" {
				path = append(path, v)
			}
		case "SNAKEPIT_TOKEN", envProcessMark:
		default:
			env = append(env, kv)
		}
	}
	env = append(env, "PYTHONPATH="+strings.Join(path, string(os.PathListSeparator)),
		"PYTHONUNBUFFERED=1", "SNAKEPIT_TOKEN="+s.Token,
		"PYTHONFAULTHANDLER=1", // a fatal signal (SIGSEGV, SIGABRT) writes the stacks to stderr
		"SNAKEPIT_MAX_MESSAGE_BYTES="+strconv.Itoa(s.MaxMessageBytes))
	return append(env, s.Env...)
}

type readyLine struct {
	Protocol  int32  `json:"protocol"`
	Pid       int    `json:"pid"`
	Python    string `json:"python"`
	Transport string `json:"transport"`
}

type handshakeResult struct {
	ready  *readyLine
	boot   *BootError
	err    error
	closed bool // the pipe reached its end without a line
}

// The worker's handshake pipe is its fd 3 (the first of exec.Cmd.ExtraFiles),
// named to it by --handshake-fd.
const (
	handshakeFD      = 3
	flagHandshakeFD  = "--handshake-fd"
	maxHandshakeLine = 1 << 20 // a BOOT-ERROR line with a long traceback fits
)

// handshake waits for the worker's one protocol line on its handshake pipe
// (never stdout, which the adapter may have left in the middle of a line).
// It ends with the line, the process's death, or ctx; then it closes the
// pipe, which also ends its reader if a process the adapter forked still
// holds the write end.
func handshake(ctx context.Context, s Spec, proc Process, pipe io.ReadCloser, h *Handle) (*readyLine, error) {
	defer func() { _ = pipe.Close() }()
	results := make(chan handshakeResult, 1)
	go func() { results <- readHandshake(s, pipe) }()
	select {
	case r := <-results:
		if r.closed {
			return nil, waitBootExit(ctx, s, proc, h)
		}
		if r.err != nil || r.boot != nil {
			return nil, firstErr(r.err, r.boot)
		}
		return r.ready, nil
	case <-proc.Done():
		select { // the boot error line may have raced the exit
		case r := <-results:
			if r.boot != nil || r.err != nil {
				return nil, firstErr(r.err, r.boot)
			}
		case <-time.After(200 * time.Millisecond):
		}
		return nil, diedBeforeHandshake(s, proc, h)
	case <-ctx.Done():
		return nil, h.startTimeout(ctx, s, "the handshake line", nil)
	}
}

// waitBootExit: the handshake pipe was closed without a line, so the worker
// is on its way out (or its adapter closed the descriptor): wait for it.
func waitBootExit(ctx context.Context, s Spec, proc Process, h *Handle) error {
	select {
	case <-proc.Done():
		return diedBeforeHandshake(s, proc, h)
	case <-ctx.Done():
		return h.startTimeout(ctx, s, "the handshake line (its handshake pipe was closed without one)", nil)
	}
}

func diedBeforeHandshake(s Spec, proc Process, h *Handle) error {
	st := proc.Status()
	return &BootError{Worker: s.ID, Adapter: s.Adapter, Exit: &st, Stderr: h.FinalStderrTail()}
}

// readHandshake reads the one line of the handshake pipe.
func readHandshake(s Spec, pipe io.Reader) handshakeResult {
	line, err := bufio.NewReader(io.LimitReader(pipe, maxHandshakeLine)).ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, readyPrefix):
		return parseReady(s, line[len(readyPrefix):])
	case strings.HasPrefix(line, bootErrorPrefix):
		return parseBootError(s, line[len(bootErrorPrefix):])
	case line == "" && err != nil:
		return handshakeResult{closed: true}
	}
	return handshakeResult{err: fmt.Errorf("worker %s: malformed handshake line %q: the snakepit package on its path "+
		"is not this runtime's; remove it from PoolConfig.PythonPath", s.ID, printable(cutLine(line)))}
}

// startTimeout builds the error of a worker that did not become ready in
// time, with what it had written and, if it answers SIGUSR1, its stacks
// (asked for only when the time is up: a cancelled start is not reported).
func (h *Handle) startTimeout(ctx context.Context, s Spec, waiting string, cause error) error {
	e := &StartTimeoutError{Worker: s.ID, Adapter: s.Adapter, Pid: h.Pid(), Waiting: waiting,
		Waited: time.Since(h.began), Err: ctx.Err(), Cause: cause}
	select {
	case <-h.Proc.Done():
	default:
		e.Running = true
		if errors.Is(e.Err, context.DeadlineExceeded) {
			e.Stacks = h.DumpStacks(500 * time.Millisecond)
		}
	}
	e.Stdout, e.Stderr = h.stdoutOut.Recent(), h.stderrOut.Recent()
	return e
}

func firstErr(err error, boot *BootError) error {
	if err != nil {
		return err
	}
	return boot
}

func parseReady(s Spec, payload string) handshakeResult {
	var r readyLine
	if err := json.Unmarshal([]byte(payload), &r); err != nil {
		return handshakeResult{err: fmt.Errorf("worker %s: malformed handshake %q: %w", s.ID, payload, err)}
	}
	if r.Protocol != ProtocolVersion {
		return handshakeResult{err: &ProtocolError{Worker: s.ID, Got: r.Protocol}}
	}
	return handshakeResult{ready: &r}
}

func parseBootError(s Spec, payload string) handshakeResult {
	b := &BootError{Worker: s.ID, Adapter: s.Adapter}
	if err := json.Unmarshal([]byte(payload), b); err != nil {
		b.Message = payload
	}
	return handshakeResult{boot: b}
}

// connect dials the worker and waits for its first successful health check.
func connect(ctx context.Context, s Spec, sock string) (Conn, *pb.HealthReply, error) {
	conn, err := s.Transport.Dial(ctx, Endpoint{Socket: sock, Token: s.Token, MaxMessageBytes: s.MaxMessageBytes,
		Callbacks: s.Callbacks})
	if err != nil {
		return nil, nil, fmt.Errorf("worker %s: connect: %w", s.ID, err)
	}
	h, err := conn.Health(ctx)
	if err == nil && !h.GetOk() {
		err = errors.New("worker reports not ok")
	}
	if err == nil && int32(h.GetProtocolVersion()) != ProtocolVersion {
		err = &ProtocolError{Worker: s.ID, Got: int32(h.GetProtocolVersion())}
	}
	if err != nil {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("worker %s: health check: %w", s.ID, err)
	}
	return conn, h, nil
}

// Kill ends the worker's process group at once and waits until it is reaped.
func (h *Handle) Kill() {
	h.stop.Do(func() {
		_ = h.Proc.SignalGroup(syscall.SIGKILL)
		<-h.Proc.Done()
		h.closeConn()
	})
}

// Stop shuts the worker down gracefully: a Shutdown request letting in-flight
// calls finish within grace, then SIGTERM to its process group, then SIGKILL
// after killAfter. It returns once the process is reaped; by then whatever
// of its process group (and what left it, see Command.Mark) was still
// running got SIGKILL, as on every exit of a worker.
func (h *Handle) Stop(grace, killAfter time.Duration) {
	h.stop.Do(func() {
		if h.Conn != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = h.Conn.Shutdown(ctx, grace)
			cancel()
		}
		if !waitDone(h.Proc, grace+250*time.Millisecond) {
			_ = h.Proc.SignalGroup(syscall.SIGTERM)
			if !waitDone(h.Proc, killAfter) {
				_ = h.Proc.SignalGroup(syscall.SIGKILL)
				<-h.Proc.Done()
			}
		}
		h.closeConn()
	})
}

func (h *Handle) closeConn() {
	if h.Conn != nil {
		_ = h.Conn.Close()
	}
}

func waitDone(p Process, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.Done():
		return true
	case <-t.C:
		return false
	}
}
