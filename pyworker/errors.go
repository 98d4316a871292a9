package pyworker

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrBootFailed is matched (errors.Is) by every *BootError.
var ErrBootFailed = errors.New("worker failed to boot")

// BootError means a worker could not start: its adapter could not be
// imported or instantiated, or the process died before its handshake. It is
// never retried: the same code would fail the same way.
type BootError struct {
	Worker    string      `json:"-"`
	Adapter   string      `json:"-"`
	Type      string      `json:"type"`      // Python exception type, when Python reported one
	Message   string      `json:"message"`   // its message
	Traceback string      `json:"traceback"` // its traceback
	Exit      *ExitStatus `json:"-"`         // set when the process died before its handshake
	Stderr    string      `json:"-"`         // last stderr lines, when the process died
}

func (e *BootError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "worker %s failed to boot adapter %q: ", e.Worker, e.Adapter)
	switch {
	case e.Type != "":
		fmt.Fprintf(&b, "%s: %s", e.Type, e.Message)
	case e.Exit != nil:
		fmt.Fprintf(&b, "the process ended before its handshake (%s)", e.Exit)
	default:
		b.WriteString(e.Message)
	}
	if e.Traceback != "" {
		b.WriteString("\n" + strings.TrimRight(e.Traceback, "\n"))
	}
	if e.Stderr != "" {
		b.WriteString("\nlast stderr lines:\n" + e.Stderr)
	}
	b.WriteString("\nfix: make the adapter importable by that interpreter (check PoolConfig.Adapter and PoolConfig.PythonPath), then start again")
	return b.String()
}

func (e *BootError) Is(target error) bool { return target == ErrBootFailed }

// ProtocolError means the worker speaks another protocol version: its Python
// package does not match this runtime.
type ProtocolError struct {
	Worker string
	Got    int32
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("worker %s speaks protocol %d, this runtime speaks %d: the snakepit Python package on its path is from another release; remove it or upgrade both", e.Worker, e.Got, ProtocolVersion)
}

// StartTimeoutError means a worker did not become ready within its start
// timeout (PoolConfig.StartTimeout): its handshake line did not come, or
// the connection or the first health check did not succeed in time. The
// runtime kills the process. It says what the worker had written. It
// matches the context's error (errors.Is(err, context.DeadlineExceeded)),
// and the connection's error when that was the step that did not finish.
type StartTimeoutError struct {
	Worker  string
	Adapter string
	Pid     int
	// Running says whether the process still ran when the time was up.
	Running bool
	// Waiting names the step that did not finish: "the handshake line", or
	// "the connection and first health check".
	Waiting string
	// Waited is how long the start had taken.
	Waited time.Duration
	// Stdout and Stderr hold the last lines of each stream, a line not yet
	// ended last (marked "[partial line: no newline yet]").
	Stdout, Stderr string
	// Stacks holds every thread's Python stack, asked for (SIGUSR1) when the
	// time was up; "" when the process wrote none.
	Stacks string
	Err    error // the context's error
	Cause  error // the connection's error, when it was that step; else nil
}

func (e *StartTimeoutError) Error() string {
	var b strings.Builder
	state := "no longer running"
	if e.Running {
		state = "still running"
	}
	fmt.Fprintf(&b, "worker %s (adapter %q, pid %d, %s) did not become ready within its start timeout (%s): still waiting for %s: %v",
		e.Worker, e.Adapter, e.Pid, state, e.Waited.Round(time.Millisecond), e.Waiting, e.Err)
	if e.Cause != nil {
		fmt.Fprintf(&b, " (%v)", e.Cause)
	}
	for _, part := range [][2]string{{"last stdout lines", e.Stdout}, {"last stderr lines", e.Stderr}, {"its Python stacks", e.Stacks}} {
		if part[1] == "" {
			fmt.Fprintf(&b, "\n%s: none", part[0])
			continue
		}
		fmt.Fprintf(&b, "\n%s:\n%s", part[0], strings.TrimRight(part[1], "\n"))
	}
	b.WriteString("\nfix: if the adapter's import is slow (loading a model or data), raise PoolConfig.StartTimeout " +
		"(start_timeout in the config file; default 60s); if it never finishes, check what the adapter's module " +
		"waits for at import (the stacks above show where it is)")
	return b.String()
}

// Unwrap returns the context's error and, if any, the connection's.
func (e *StartTimeoutError) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Cause}
}
