package supervision

import (
	"fmt"
	"syscall"

	"github.com/snakepit-go/snakepit/internal/signame"
)

// ExitKind is why a worker's process ended.
type ExitKind int

// The ways a worker ends.
const (
	// ExitCrashed: the process died on its own (Code or Signal says how).
	ExitCrashed ExitKind = iota + 1
	// ExitKilled: the runtime killed it (Why says why: a hang, failed health
	// checks, a broken connection).
	ExitKilled
	// ExitRecycled: replaced on purpose (Why holds the RecycleReason).
	ExitRecycled
	// ExitBootFailed: it could not start (its adapter does not import, or it
	// did not become ready within PoolConfig.StartTimeout).
	ExitBootFailed
	// ExitStopped: the runtime stopped it (Stop, or its pool failed).
	ExitStopped
)

var exitKindNames = map[ExitKind]string{ExitCrashed: "crashed", ExitKilled: "killed", ExitRecycled: "recycled",
	ExitBootFailed: "boot failed", ExitStopped: "stopped"}

func (k ExitKind) String() string {
	if s, ok := exitKindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("ExitKind(%d)", int(k))
}

// Exit is a typed exit reason.
type Exit struct {
	Kind ExitKind
	// Code is the exit code (-1 when a signal ended the process).
	Code int
	// Signal is the signal that ended it, 0 if none.
	Signal syscall.Signal
	// Why explains a kill or a recycle, or carries the boot error.
	Why string
	// OOMKilled: the kernel's out-of-memory killer sent the SIGKILL (as the
	// worker's memory cgroup tells).
	OOMKilled bool
}

// Normal reports whether the process ended as asked or with exit code 0:
// a transient worker is not restarted after a normal exit.
func (e Exit) Normal() bool {
	switch e.Kind {
	case ExitStopped, ExitRecycled:
		return true
	case ExitCrashed:
		return e.Signal == 0 && e.Code == 0
	}
	return false
}

func (e Exit) String() string {
	status := fmt.Sprintf("exit code %d", e.Code)
	if e.Signal != 0 {
		status = fmt.Sprintf("signal %d (%s)", int(e.Signal), signame.Name(e.Signal))
		if e.OOMKilled {
			status += " from the kernel's out-of-memory killer"
		}
	}
	switch e.Kind {
	case ExitCrashed:
		if e.Why != "" {
			return "crashed: " + status + ": " + e.Why
		}
		return "crashed: " + status
	case ExitKilled:
		return fmt.Sprintf("killed by the runtime (%s): %s", status, e.Why)
	case ExitRecycled, ExitBootFailed:
		return e.Kind.String() + ": " + e.Why
	}
	return e.Kind.String()
}

// RestartType says which exits a worker is restarted after, as in OTP.
type RestartType string

// Restart types.
const (
	// Permanent workers are always restarted.
	Permanent RestartType = "permanent"
	// Transient workers are restarted only after an abnormal exit (a crash
	// with a non-zero code or a signal, a kill, a failed boot); one that
	// exits with code 0 on its own is not.
	Transient RestartType = "transient"
	// Temporary workers are never restarted; a pool whose workers are all
	// gone fails.
	Temporary RestartType = "temporary"
)

// Valid reports whether t is a known restart type ("" counts: it means
// Permanent).
func (t RestartType) Valid() bool {
	switch t {
	case "", Permanent, Transient, Temporary:
		return true
	}
	return false
}

// wantsRestart reports whether a child of restart type t is restarted after e.
func (t RestartType) wantsRestart(e Exit) bool {
	switch t {
	case Temporary:
		return false
	case Transient:
		return !e.Normal()
	}
	return true
}
