package telemetry

import "time"

// WorkerRecycled: a worker was replaced on purpose (not a failure). Reason is
// one of "age", "requests", "memory", "memory-hard-limit", "manual".
type WorkerRecycled struct {
	Time   time.Time
	Pool   string
	Worker string // the worker that went
	// Replacement is the worker that took its place ("" after the hard
	// memory limit: the same worker restarts).
	Replacement string
	Reason      string
	// Detail gives the numbers behind the decision.
	Detail   string
	Uptime   time.Duration
	Requests int64  // calls it served
	RSS      uint64 // its last sampled resident memory, bytes (0: not sampled)
}

// EventName implements Event.
func (WorkerRecycled) EventName() string { return "worker.recycled" }
