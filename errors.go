package snakepit

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/snakepit-go/snakepit/actors"
	"github.com/snakepit-go/snakepit/pyworker"
)

// Sentinel errors, for errors.Is. Every error a Call returns wraps one of
// these, a *PythonError, or the context's error.
var (
	// ErrUnknownPool: no pool of that name in the Config.
	ErrUnknownPool = errors.New("unknown pool")
	// ErrUnknownTool: the pool's adapter has no tool of that name.
	ErrUnknownTool = errors.New("unknown tool")
	// ErrBadArguments: the arguments cannot be encoded, or do not match the
	// tool's signature.
	ErrBadArguments = errors.New("bad arguments")
	// ErrUnencodableResult: the tool returned a value JSON cannot carry.
	ErrUnencodableResult = errors.New("tool result cannot be encoded")
	// ErrPoolSaturated: every worker is busy and the pool's queue is full.
	// Retry later, add workers (PoolConfig.Size) or raise PoolConfig.QueueSize.
	ErrPoolSaturated = errors.New("pool saturated")
	// ErrWorkerCrashed: the worker process died while running the call.
	// Match *WorkerCrashedError with errors.As for the exit code or signal.
	ErrWorkerCrashed = errors.New("worker crashed")
	// ErrPoolUnavailable: the pool has failed (restart intensity exceeded or
	// a worker cannot boot; see Runtime.Health) or is stopping.
	ErrPoolUnavailable = actors.ErrPoolUnavailable
	// ErrTransport: the connection to the worker failed without the process
	// dying.
	ErrTransport = errors.New("worker connection failed")
	// ErrMessageTooLarge: the request or the reply exceeds
	// Config.MaxMessageBytes. Send less, or raise the limit.
	ErrMessageTooLarge = errors.New("message too large")
	// ErrStopped: the Runtime has been stopped.
	ErrStopped = errors.New("runtime stopped")
	// ErrBootFailed: a worker could not start its adapter; match *BootError.
	ErrBootFailed = pyworker.ErrBootFailed
	// ErrNoPython: no interpreter able to run the workers was found; match
	// *NoPythonError for what was tried.
	ErrNoPython = pyworker.ErrNoPython
	// ErrSessionLost: the session is closed or expired, or (strict modes)
	// its worker died or was recycled away. Its Python state is gone: open
	// a new session. A call that was running when its worker died matches
	// ErrWorkerCrashed too.
	ErrSessionLost = actors.ErrSessionLost
	// ErrSessionBusy: a strict-fail-fast session's worker had no free slot.
	ErrSessionBusy = errors.New("session worker busy")
	// ErrSessionLimit: the pool holds PoolConfig.Sessions.MaxSessions
	// sessions, or every worker MaxPerWorker.
	ErrSessionLimit = actors.ErrSessionLimit
	// ErrDeadlock: a callback handler made a call that could only run on
	// the worker waiting for that handler.
	ErrDeadlock = errors.New("call would deadlock")
	// ErrBadCallback: Runtime.Register was given a bad name or handler.
	ErrBadCallback = errors.New("bad callback registration")
)

// BootError: a worker could not import or instantiate its adapter, or died
// before its handshake. It carries the Python traceback.
type BootError = pyworker.BootError

// NoPythonError lists the interpreters tried and why each was rejected.
type NoPythonError = pyworker.NoPythonError

// ExitStatus says how a worker process ended: exit code or signal.
type ExitStatus = pyworker.ExitStatus

// OOMVerdict says whether the kernel's out-of-memory killer ended a worker,
// as far as its memory cgroup lets us know.
type OOMVerdict = pyworker.OOMVerdict

// StartTimeoutError: a worker did not become ready within
// PoolConfig.StartTimeout. It carries the last lines the worker wrote to
// stdout and stderr (a line without its newline too), its pid, whether it
// still ran, and its Python stacks; it matches context.DeadlineExceeded.
type StartTimeoutError = pyworker.StartTimeoutError

// PythonError is an exception raised by a tool, with its Python traceback.
type PythonError struct {
	Pool      string
	Tool      string
	Worker    string
	Type      string // qualified exception type, e.g. "builtins.ValueError"
	Message   string
	Traceback string
}

func (e *PythonError) Error() string {
	return fmt.Sprintf("snakepit: %s.%s raised %s: %s", e.Pool, e.Tool, e.Type, e.Message)
}

// WorkerCrashedError: the worker process running the call died.
type WorkerCrashedError struct {
	Pool   string
	Tool   string
	Worker string
	// Exit is how the process ended: exit code, or signal (and, for a
	// SIGKILL, whether the kernel's out-of-memory killer did it, when the
	// worker's memory cgroup lets us know: Exit.OOM).
	Exit ExitStatus
	// KilledBy says why the runtime itself killed the worker (a call stuck
	// past Watchdog.HangGrace, failed health checks, its memory over
	// RecyclePolicy.HardMemoryLimit, a broken connection); "" when it died
	// on its own.
	KilledBy string
	// Stacks holds the Python stacks of all the worker's threads, dumped
	// just before the runtime killed it for being stuck; "" otherwise.
	Stacks string
	// Stderr holds the last lines the worker wrote to stderr.
	Stderr string
	// Session is the strict session the call belonged to ("" for none): it
	// is lost with the worker, and the error matches ErrSessionLost too.
	Session string
}

func (e *WorkerCrashedError) Error() string {
	msg := fmt.Sprintf("snakepit: %s.%s: worker %s crashed (%s) while running the call", e.Pool, e.Tool, e.Worker, e.Exit)
	switch {
	case e.KilledBy != "":
		msg = fmt.Sprintf("snakepit: %s.%s: worker %s was killed by the runtime (%s) while running the call: %s",
			e.Pool, e.Tool, e.Worker, e.Exit, e.KilledBy)
	case e.Exit.Signal == syscall.SIGKILL && !e.Exit.OOM.Known:
		msg += " (whether the kernel's out-of-memory killer sent it cannot be told: " + e.Exit.OOM.Detail + ")"
	case e.Exit.Signal == syscall.SIGKILL && !e.Exit.OOM.Killed:
		msg += " (not the out-of-memory killer: something outside the runtime killed it)"
	}
	if e.Session != "" {
		msg += "; session " + e.Session + " is lost with it (open a new one)"
	}
	if e.Stacks != "" {
		msg += "; its Python stacks before the kill:\n" + e.Stacks
	}
	if e.Stderr != "" {
		msg += "; last stderr lines:\n" + e.Stderr
	}
	return msg
}

func (e *WorkerCrashedError) Is(target error) bool {
	return target == ErrWorkerCrashed || (target == ErrSessionLost && e.Session != "")
}

// Signal is the signal that killed the worker, 0 if it exited.
func (e *WorkerCrashedError) Signal() syscall.Signal { return e.Exit.Signal }

// callError wraps a sentinel with what happened to which call.
func callError(pool, tool string, sentinel error, detail string) error {
	detail = strings.TrimSpace(detail)
	if detail == "" {
		return fmt.Errorf("snakepit: %s.%s: %w", pool, tool, sentinel)
	}
	return fmt.Errorf("snakepit: %s.%s: %w: %s", pool, tool, sentinel, detail)
}
