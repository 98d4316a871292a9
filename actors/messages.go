package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	wpb "github.com/snakepit-go/snakepit/pyworker/pb"
)

// The runtime's requests to a pool actor, besides the calls (the protobuf
// CallRequest and CancelCall of actors/pb). They are local-only Go structs:
// their answers carry Go errors, PIDs or live objects (see the package doc).
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

// Recycling requests.
type (
	// RecycleWorker replaces one worker gracefully (reason "manual"); it is
	// answered with *RecycleDone once the old worker has stopped.
	RecycleWorker struct{ ID string }
	// RecycleAll replaces every worker of the pool, MaxConcurrent at a time
	// (a rolling restart); answered with *RecycleDone when all are replaced.
	RecycleAll struct{}
	// RecycleDone answers RecycleWorker and RecycleAll.
	RecycleDone struct{ Err error }
)

// Session requests.
type (
	// OpenSession places a new session; answered with *SessionOpened.
	OpenSession struct {
		ID   string
		Mode string
	}
	// SessionOpened answers OpenSession: the worker holding it, or Err.
	SessionOpened struct {
		Worker string
		Err    error
	}
	// CloseSession ends a session; answered with *SessionClosed once the
	// worker's end hook has run.
	CloseSession struct{ ID string }
	// SessionClosed answers CloseSession.
	SessionClosed struct {
		Ended     bool   // the session had state on its worker
		HookError string // what the Python end hook raised, if it did
		Err       error
	}
)

// Queries answered by a worker; a pool forwards a DescribeQuery to one of its
// ready workers. They never take a worker's capacity.
type (
	// DescribeQuery is answered with *DescribeAnswer.
	DescribeQuery struct{}
	// DescribeAnswer lists the adapter's tools.
	DescribeAnswer struct {
		Reply *wpb.DescribeReply
		Err   error
	}
	// StatsQuery is answered with *StatsAnswer.
	StatsQuery struct{}
	// StatsAnswer is what the worker's Python process reports.
	StatsAnswer struct {
		Worker string
		Reply  *wpb.StatsReply
		Err    error
	}
)

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
		queuedAt time.Time // when it joined the queue, if it did (the pool's clock)
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
	// killWorker tells a worker actor to kill its process at once.
	killWorker struct {
		gen    uint64
		detail string
	}
	// gilSwitchedOn: a free-threaded worker's GIL was switched on.
	gilSwitchedOn struct{ by, when string }
	// endSession asks a worker to run the session's end hook; replyTo (if
	// not nil) gets the *SessionClosed.
	endSession struct {
		id      string
		gen     uint64
		replyTo *actor.PID
	}
	// sessionEnded tells the pool a worker finished an endSession.
	sessionEnded struct{ worker *actor.PID }
)

// id is the call's request id.
func (d *dispatch) id() string { return d.req.GetExecute().GetRequestId() }

// deadlinePassed reports whether d's call deadline is at or before now.
func (d *dispatch) deadlinePassed(now time.Time) bool {
	dl := d.req.GetExecute().GetDeadlineUnixNano()
	return dl != 0 && dl <= now.UnixNano()
}
