package supervision

import "time"

// WatchdogPolicy is how a pool finds workers that are stuck or frozen and
// replaces them (like uWSGI's harakiri and gunicorn's worker heartbeat).
type WatchdogPolicy struct {
	// HangGrace is how long a call may keep its worker busy after its
	// caller gave up on it (deadline passed or context cancelled). The
	// caller is answered at once; the worker's capacity stays taken until
	// Python reports the call ended, and if it has not within HangGrace the
	// worker is killed and replaced. Default 5s.
	HangGrace time.Duration
	// HealthInterval is how often each worker is health-checked. Default 5s.
	HealthInterval time.Duration
	// HealthTimeout bounds one health check. The worker answers it on a
	// thread of its own, but that thread needs the GIL: a tool holding the
	// GIL in C code for longer than HealthTimeout×HealthFailures (plus the
	// intervals) is taken for a frozen worker; raise them for such tools.
	// Default 5s.
	HealthTimeout time.Duration
	// HealthFailures is how many health checks in a row a worker may fail
	// before it is killed and replaced (a frozen or wedged process).
	// Default 3.
	HealthFailures int
}

// Watchdog defaults.
const (
	DefaultHangGrace      = 5 * time.Second
	DefaultHealthInterval = 5 * time.Second
	DefaultHealthTimeout  = 5 * time.Second
	DefaultHealthFailures = 3
)

// WithDefaults fills the zero fields with their defaults.
func (w WatchdogPolicy) WithDefaults() WatchdogPolicy {
	if w.HangGrace == 0 {
		w.HangGrace = DefaultHangGrace
	}
	if w.HealthInterval == 0 {
		w.HealthInterval = DefaultHealthInterval
	}
	if w.HealthTimeout == 0 {
		w.HealthTimeout = DefaultHealthTimeout
	}
	if w.HealthFailures == 0 {
		w.HealthFailures = DefaultHealthFailures
	}
	return w
}

// Settled reports whether the calls a worker's caller gave up on have all
// ended in Python: pythonInFlight is what the worker reports running,
// activeBefore and activeAfter the calls the runtime had running on it
// (not given up on) when it asked and when the answer came. A call sent
// after the question cannot be counted by it, hence the smaller of the two.
func Settled(pythonInFlight, activeBefore, activeAfter int) bool {
	return pythonInFlight <= min(activeBefore, activeAfter)
}
