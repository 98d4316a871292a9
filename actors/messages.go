package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	"github.com/snakepit-go/snakepit/pyworker"
)

// Requests the runtime sends to a pool actor (local only).
type (
	// AwaitReady is answered with *ReadyReply once every worker is ready, or
	// the pool failed.
	AwaitReady struct{}
	// ReadyReply answers AwaitReady.
	ReadyReply struct{ Err error }
	// Drain stops the pool taking new calls; it is answered with *Drained once
	// no call is queued or running.
	Drain struct{}
	// Drained answers Drain.
	Drained struct{}
	// StatusRequest is answered with *PoolStatus.
	StatusRequest struct{}
)

// PoolStatus is a snapshot of one pool.
type PoolStatus struct {
	Name     string
	Size     int
	Ready    int
	Queued   int
	InFlight int
	Failed   bool
	Reason   string // why the pool failed
	Workers  []WorkerStatus
	Profile  string
	// QueueSize is the queue's bound.
	QueueSize int
	// NoFreeCapacity counts calls that found every worker at capacity and
	// queued; Saturated counts calls refused because the queue was full.
	NoFreeCapacity, Saturated int64
	// Recycling counts the recycles queued or under way; Recycles counts the
	// recycles done, by reason.
	Recycling int
	Recycles  map[string]int64
	// Requests and Restarts count since the start, gone workers included.
	Requests int64
	Restarts int
	// LastSaturated is when a call was last refused (zero: never).
	LastSaturated time.Time
	// Sessions counts the sessions open (lost ones included until they expire).
	Sessions int
}

// WorkerStatus is a snapshot of one worker as the pool sees it.
type WorkerStatus struct {
	PID      *actor.PID // the worker actor
	ID       string
	Pid      int
	Ready    bool
	Capacity int
	Load     int
	Restarts int
	// AtCapacity counts the dispatches that filled this worker to capacity.
	AtCapacity int64
	// Started is when its current process became ready; Requests counts the
	// calls that process served; RSS is its last sampled resident memory
	// (0 when memory recycling is off).
	Started  time.Time
	Requests int64
	RSS      uint64
	// Retiring: recycled, finishing its calls before it stops. Starting: a
	// replacement not yet ready.
	Retiring, Starting bool
	// Busy is how long its current process has had at least one call
	// running; BootCPU the CPU time that process used to become ready.
	Busy, BootCPU time.Duration
	// LastExit says how its last process ended ("" if none has).
	LastExit string
	// Sessions counts the sessions bound to its current process.
	Sessions int
}

// Messages between a pool and its workers.
type (
	workerReady struct {
		worker   *actor.PID
		gen      uint64
		capacity int
		pid      int
		boot     time.Duration // from launch to ready
		bootCPU  time.Duration // CPU the process used to become ready
	}
	// gilState is what a free-threaded worker last said about its GIL.
	gilState struct {
		on       bool
		by, when string
	}
	// workerDown: the worker incarnation gen takes no more calls: its
	// process died, or it is about to be killed (why says which).
	workerDown struct {
		worker *actor.PID
		gen    uint64
		why    string // "" : its process died
	}
	slotFreed struct {
		worker *actor.PID
		gen    uint64
		id     string
	}
	// dispatch carries a call to the worker incarnation gen.
	dispatch struct {
		req      *apb.CallRequest
		caller   *actor.PID
		gen      uint64
		queuedAt time.Time // when it joined the queue, if it did
		sess     *session  // the session it belongs to, if any
		// reboundFrom: a hint session moved from this worker for the call.
		reboundFrom string
	}
	// requeue hands a call back to the pool: it reached a worker incarnation
	// that can no longer run it, and never reached Python.
	requeue struct{ d *dispatch }
	// retire asks a retiring worker to stop its process gracefully; the
	// actor stops itself once the process is gone, so the pool's Terminated
	// means the process has exited.
	retire struct{}
	// poolFailed is sent by the pool to itself when it must give up.
	poolFailed struct{ err error }
	// gilSwitchedOn: a free-threaded worker's GIL was switched on.
	gilSwitchedOn struct{ by, when string }
	// restartDue: a worker's restart backoff has passed.
	restartDue struct{ child *actor.PID }
)

// Messages a worker actor sends itself from its goroutines.
type (
	launched struct {
		gen     uint64
		h       *pyworker.Handle
		bootCPU time.Duration // CPU the process used to become ready
	}
	launchFailed struct {
		gen uint64
		err error
	}
	processExited struct {
		gen    uint64
		status pyworker.ExitStatus
		stderr string // its last stderr lines
	}
	transportBroken struct {
		gen uint64
		err string
	}
	callDone struct{ id string }
	// processGone: a retired worker's process has exited and been reaped.
	processGone struct{}
)

// Reasons a worker actor fails with (the panic value its supervisor sees).
type (
	// crashed: the Python process died; killedBy says why the runtime killed
	// it, "" when it died on its own.
	crashed struct {
		status   pyworker.ExitStatus
		killedBy string
		stderr   string // the last lines it wrote to stderr
		stacks   string // dumped before a kill for being stuck
	}
	// bootFailed: the worker cannot start; restarting would not help.
	bootFailed struct{ err error }
	// launchError: the worker did not start for a reason that may pass.
	launchError struct{ err error }
)

// deadlinePassed reports whether d's call deadline is at or before now.
func (d *dispatch) deadlinePassed(now time.Time) bool {
	dl := d.req.GetExecute().GetDeadlineUnixNano()
	return dl != 0 && dl <= now.UnixNano()
}
