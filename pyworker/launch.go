package pyworker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	Health     *pb.HealthReply
	stackFile  string // where the worker dumps its stacks on SIGUSR1
	stderr     *stderrLogger
	stderrDone chan struct{} // closed once its stderr reached EOF
	stop       sync.Once
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
	if h.stderrDone != nil {
		t := time.NewTimer(stderrDrain)
		defer t.Stop()
		select {
		case <-h.stderrDone:
		case <-t.C:
		}
	}
	return h.stderr.Tail()
}

var socketSeq atomic.Uint64

// Launch starts a worker and returns it once it has completed the handshake
// and answered a health check. Named steps: spawn, handshake, connect, ready.
// If ctx ends first the process is killed.
func Launch(ctx context.Context, s Spec) (*Handle, error) {
	base := filepath.Join(s.RunDir, "w"+strconv.FormatUint(socketSeq.Add(1), 10))
	sock, stacks := base+".sock", base+".stacks"
	proc, pipes, err := startProcess(s.command(sock, stacks))
	if err != nil {
		return nil, err
	}
	if s.Processes != nil {
		s.Processes.add(proc)
	}
	h := &Handle{Proc: proc, stackFile: stacks, stderr: &stderrLogger{log: s.Logger}}
	h.stderrDone = make(chan struct{})
	go func() {
		defer close(h.stderrDone)
		readLines(pipes.stderr, h.stderr.line)
	}()
	hello, err := handshake(ctx, s, proc, pipes, h.stderr)
	if err == nil {
		h.Python = hello.Python
		h.Conn, h.Health, err = connect(ctx, s, sock)
	}
	if err != nil {
		h.Kill()
		return nil, err
	}
	return h, nil
}

func (s Spec) command(sock, stacks string) Command {
	args := []string{"-u", "-m", "snakepit.worker",
		"--adapter", s.Adapter, "--transport", s.Transport.Name(), "--socket", sock, "--stack-file", stacks,
		"--worker-id", s.ID, "--run-id", s.RunID, "--capacity", strconv.Itoa(s.Capacity),
		"--watch-stdin"}
	args = append(args, hostArgs()...) // lets a later start's sweep tell whether we are gone
	if s.Profile != "" {
		args = append(args, "--profile", s.Profile)
	}
	if s.ThreadChecks {
		args = append(args, "--thread-checks")
	}
	return Command{Path: s.Interpreter.Path, Args: args, Env: s.environ(), Dir: s.Dir}
}

func (s Spec) environ() []string {
	path := append([]string{s.PackageDir}, s.PythonPath...)
	env := make([]string, 0, len(os.Environ())+8)
	for _, kv := range os.Environ() {
		switch k, v, _ := strings.Cut(kv, "="); k {
		case "PYTHONPATH":
			if v != "" {
				path = append(path, v)
			}
		case "SNAKEPIT_TOKEN":
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
	ready *readyLine
	boot  *BootError
	err   error
}

// handshake reads the worker's stdout until its one protocol line; every
// other stdout line is logged, then and afterwards.
func handshake(ctx context.Context, s Spec, proc Process, p *pipes, stderr *stderrLogger) (*readyLine, error) {
	results := make(chan handshakeResult, 1)
	go readLines(p.stdout, stdoutHandler(s, results))
	select {
	case r := <-results:
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
		st := proc.Status()
		return nil, &BootError{Worker: s.ID, Adapter: s.Adapter, Exit: &st, Stderr: stderr.Tail()}
	case <-ctx.Done():
		return nil, fmt.Errorf("worker %s: no handshake before the start timeout (Config.StartTimeout): %w", s.ID, ctx.Err())
	}
}

func firstErr(err error, boot *BootError) error {
	if err != nil {
		return err
	}
	return boot
}

func stdoutHandler(s Spec, results chan<- handshakeResult) func(string) {
	done := false
	return func(line string) {
		switch {
		case !done && strings.HasPrefix(line, readyPrefix):
			done = true
			results <- parseReady(s, line[len(readyPrefix):])
		case !done && strings.HasPrefix(line, bootErrorPrefix):
			done = true
			results <- parseBootError(s, line[len(bootErrorPrefix):])
		default:
			s.Logger.Info(line, "stream", "stdout")
		}
	}
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
// after killAfter. It returns once the process is reaped.
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
