package pyworker

import (
	"errors"
	"fmt"
	"strings"
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
