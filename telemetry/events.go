package telemetry

import "time"

// The events of the runtime. docs/telemetry.md is generated from this file
// (go generate in the repository root): every struct here with an EventName
// method is an event, every field is documented there with its comment.

// RequestExecuted: a call finished on a worker, whatever its outcome.
type RequestExecuted struct {
	Time   time.Time
	Pool   string
	Worker string
	Tool   string
	// Duration is from the worker taking the call to its answer.
	Duration time.Duration
	// Outcome is "ok", "python_error", "unknown_tool", "bad_arguments",
	// "unencodable_result", "too_large", "deadline", "cancelled",
	// "shutting_down", "worker_crashed" or "transport".
	Outcome string
}

// PoolSaturated: a call was refused because every worker was busy and the
// queue was full (the caller got ErrPoolSaturated).
type PoolSaturated struct {
	Time   time.Time
	Pool   string
	Tool   string
	Queued int // calls waiting, equal to the limit
	Limit  int // PoolConfig.QueueSize
}

// CapacityReached: a call filled a worker to its capacity.
type CapacityReached struct {
	Time     time.Time
	Pool     string
	Worker   string
	Capacity int // calls the worker runs at once
	Load     int // calls it runs now, equal to Capacity
}

// QueueTimeout: a queued call's deadline passed before a worker was free.
type QueueTimeout struct {
	Time   time.Time
	Pool   string
	Tool   string
	Waited time.Duration // time spent in the queue
}

// WorkerStarted: a worker's Python process is being started.
type WorkerStarted struct {
	Time   time.Time
	Pool   string
	Worker string
}

// WorkerReady: a worker completed its handshake and health check and takes
// calls.
type WorkerReady struct {
	Time     time.Time
	Pool     string
	Worker   string
	Pid      int
	Capacity int // calls it runs at once (1 in the process profile)
	// Boot is from WorkerStarted to ready.
	Boot time.Duration
}

// WorkerStopped: a worker's actor ended, its process stopped or stopping.
type WorkerStopped struct {
	Time   time.Time
	Pool   string
	Worker string
	// Reason is "stop" (Runtime.Stop), "recycled", "pool failed",
	// "not restarted" (its restart type let it go after a crash) or
	// "replacement did not start".
	Reason string
}

// WorkerCrashed: a worker's process died, or the runtime killed it (a hang,
// failed health checks, a broken connection).
type WorkerCrashed struct {
	Time     time.Time
	Pool     string
	Worker   string
	Pid      int
	ExitCode int // -1 when a signal ended it
	Signal   int // 0 if none
	// KilledBy says why the runtime killed it; "" when it died on its own.
	KilledBy string
	// Exit is the typed exit reason, as text (supervision.Exit).
	Exit   string
	Uptime time.Duration // how long the process had been ready (0 if it never was)
	// OOM, for a SIGKILL the runtime did not send: "yes: …" when the
	// kernel's out-of-memory killer sent it, "no: …" when not, "unknown: …"
	// when the worker's memory cgroup cannot tell; "" otherwise.
	OOM string
	// Stderr holds the last lines the worker wrote to stderr.
	Stderr string
	// Stacks holds the Python stacks of all its threads, dumped just before
	// the runtime killed it for being stuck; "" otherwise.
	Stacks string
}

// WorkerRestarted: a crashed worker is being started again after its
// backoff.
type WorkerRestarted struct {
	Time     time.Time
	Pool     string
	Worker   string
	Backoff  time.Duration // the wait before this restart
	Restarts int           // restarts of the pool within RestartPolicy.Period, this one included
}

// WorkerRecycled: a worker was replaced on purpose (not a failure). Reason is
// one of "age", "requests", "memory", "memory-hard-limit", "manual", "profile".
type WorkerRecycled struct {
	Time   time.Time
	Pool   string
	Worker string // the worker that went
	// Replacement is the worker that took its place ("" after the hard
	// memory limit: the same worker restarts).
	Replacement string
	Reason      string // "age", "requests", "memory", "memory-hard-limit", "manual" or "profile"
	// Detail gives the numbers behind the decision.
	Detail   string
	Uptime   time.Duration // how long it had been ready
	Requests int64         // calls it served
	RSS      uint64        // its last sampled resident memory, bytes (0: not sampled)
}

// GILEnabled: on a free-threaded Python, a worker's GIL got switched on by
// an extension module that does not declare free-threading support; its
// threads now run Python one at a time.
type GILEnabled struct {
	Time   time.Time
	Pool   string
	Worker string
	// Module is the module whose import did it, as Python's warning names
	// it ("" when it did not say).
	Module string
	// When is when the worker noticed: "adapter import" or "first call of
	// tool X".
	When string
}

// BootFailed: a worker could not start its adapter (import error, exception
// in the adapter's constructor); the pool fails with it.
type BootFailed struct {
	Time   time.Time
	Pool   string
	Worker string
	Error  string // with the Python traceback
}

// RestartIntensityExceeded: more restarts than RestartPolicy.MaxRestarts
// within its Period; the pool gives up and fails.
type RestartIntensityExceeded struct {
	Time     time.Time
	Pool     string
	Restarts int           // restarts within the period
	Period   time.Duration // RestartPolicy.Period
	LastExit string        // how the last worker to fail ended
}

// SessionOpened: a session was placed on a worker (Runtime.OpenSession).
type SessionOpened struct {
	Time    time.Time
	Pool    string
	Session string
	Worker  string
	Mode    string // "strict", "strict-fail-fast" or "hint"
}

// SessionClosed: a session ended; its worker ran the Python end hook unless
// the worker was gone.
type SessionClosed struct {
	Time    time.Time
	Pool    string
	Session string
	Worker  string // the worker it was last bound to
	// Reason: "closed" (Session.Close), "expired" (idle past
	// SessionPolicy.IdleTTL) or "lost" (its worker died or was recycled
	// away; later strict calls get ErrSessionLost).
	Reason string
}

// SessionRebound: a hint-mode session's call found its worker busy or gone
// and ran on another worker, which holds the session from then on.
type SessionRebound struct {
	Time    time.Time
	Pool    string
	Session string
	From    string // the worker it left
	To      string // the worker it runs on now
}

// EventName implements Event.
func (RequestExecuted) EventName() string { return "request.executed" }

// EventName implements Event.
func (PoolSaturated) EventName() string { return "pool.saturated" }

// EventName implements Event.
func (CapacityReached) EventName() string { return "pool.capacity_reached" }

// EventName implements Event.
func (QueueTimeout) EventName() string { return "pool.queue_timeout" }

// EventName implements Event.
func (WorkerStarted) EventName() string { return "worker.started" }

// EventName implements Event.
func (WorkerReady) EventName() string { return "worker.ready" }

// EventName implements Event.
func (WorkerStopped) EventName() string { return "worker.stopped" }

// EventName implements Event.
func (WorkerCrashed) EventName() string { return "worker.crashed" }

// EventName implements Event.
func (WorkerRestarted) EventName() string { return "worker.restarted" }

// EventName implements Event.
func (WorkerRecycled) EventName() string { return "worker.recycled" }

// EventName implements Event.
func (GILEnabled) EventName() string { return "worker.gil_enabled" }

// EventName implements Event.
func (BootFailed) EventName() string { return "pool.boot_failed" }

// EventName implements Event.
func (RestartIntensityExceeded) EventName() string { return "pool.restart_intensity_exceeded" }

// EventName implements Event.
func (SessionOpened) EventName() string { return "session.opened" }

// EventName implements Event.
func (SessionClosed) EventName() string { return "session.closed" }

// EventName implements Event.
func (SessionRebound) EventName() string { return "session.rebound" }
