package actors

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/snakepit-go/snakepit/pyworker"
	"github.com/snakepit-go/snakepit/supervision"
	"github.com/snakepit-go/snakepit/telemetry"
)

// PoolSettings configure one pool actor.
type PoolSettings struct {
	Name      string
	Profile   string // the concrete profile its workers run, for reports
	Size      int
	QueueSize int
	Worker    WorkerSettings
	Restart   supervision.Policy
	Recycle   supervision.RecyclePolicy
	Sessions  SessionPolicy // defaults applied here
	// Clock is the time every decision of the pool and its workers is made
	// by: the deadlines of queued calls, when a worker started (its age for
	// a recycle) and the recycle's uptime, the restart intensity window, a
	// session's idle expiry, and the watchdog's hang grace (the pool hands
	// it to its workers, see WorkerSettings.Clock). nil: the system clock.
	//
	// Left on the system clock: timers that fire messages (backoffs, drain
	// timeouts, tickers, a call's own deadline timer in its worker, which
	// follows its caller's context), the timestamps of events, and the
	// measurements reported (boot time, busy time, when the pool last
	// refused a call). A test with a fake clock sends the tick or timeout
	// message itself.
	Clock  supervision.Clock
	Logger hclog.Logger
	Events *telemetry.Bus // nil: no events
	// AutoFallback: the profile was chosen by "auto"; if a thread-profile
	// worker reports its free-threaded GIL switched on, the pool moves to
	// the process profile (a rolling replacement of its workers).
	AutoFallback bool
}

// WorkerSettings are shared by every worker of a pool.
type WorkerSettings struct {
	Spec          pyworker.Spec              // template; ID and Logger are set per worker
	Watchdog      supervision.WatchdogPolicy // defaults applied
	Pool          string                     // the pool's name, for events
	Events        *telemetry.Bus             // nil: no events
	StartTimeout  time.Duration              // spawn to ready
	ShutdownGrace time.Duration              // in-flight calls may finish within it on stop
	KillAfter     time.Duration              // after SIGTERM, before SIGKILL
	// Launch starts one worker process and returns it ready (spawn,
	// handshake, connect, first health check). nil: pyworker.Launch. Tests
	// put a fake process and connection behind it (pyworker.NewHandle).
	Launch func(context.Context, pyworker.Spec) (*pyworker.Handle, error)
	// Clock is the watchdog's clock (PoolSettings.Clock; the pool sets it).
	// nil: the system clock.
	Clock supervision.Clock

	// crashSettle bounds how long a call whose connection broke waits to
	// learn whether the process died (0: defaultCrashSettle).
	crashSettle time.Duration
}

// launcher is s.Launch, or pyworker.Launch.
func (s *WorkerSettings) launcher() func(context.Context, pyworker.Spec) (*pyworker.Handle, error) {
	if s.Launch != nil {
		return s.Launch
	}
	return pyworker.Launch
}

func (s *WorkerSettings) clock() supervision.Clock {
	if s.Clock != nil {
		return s.Clock
	}
	return supervision.SystemClock{}
}

// defaultCrashSettle bounds how long a call whose connection broke waits to
// learn whether the process died (and so report a crash, not a transport
// error).
const defaultCrashSettle = time.Second

func (s *WorkerSettings) settle() time.Duration {
	if s.crashSettle > 0 {
		return s.crashSettle
	}
	return defaultCrashSettle
}

// SessionPolicy bounds a pool's sessions (Runtime.OpenSession): how many,
// how long an idle one lives, and how long a recycled worker waits for the
// sessions it holds.
type SessionPolicy struct {
	// MaxSessions is the most sessions open in the pool at once; one more is
	// refused with ErrSessionLimit. Default 10000.
	MaxSessions int

	// MaxPerWorker is the most sessions placed on one worker; a new session
	// goes to the worker holding the fewest. Default 0: no limit.
	MaxPerWorker int

	// IdleTTL closes a session that has had no call for this long (its
	// Python end hook runs); later calls get ErrSessionLost. Default 30m.
	IdleTTL time.Duration

	// DrainTimeout is how long a worker being recycled keeps serving the
	// strict sessions it holds before it stops anyway (their later calls get
	// ErrSessionLost). Default 30s.
	DrainTimeout time.Duration
}

// Session policy defaults.
const (
	DefaultMaxSessions         = 10000
	DefaultSessionIdleTTL      = 30 * time.Minute
	DefaultSessionDrainTimeout = 30 * time.Second
)

// WithDefaults fills in the zero fields.
func (p SessionPolicy) WithDefaults() SessionPolicy {
	if p.MaxSessions == 0 {
		p.MaxSessions = DefaultMaxSessions
	}
	if p.IdleTTL == 0 {
		p.IdleTTL = DefaultSessionIdleTTL
	}
	if p.DrainTimeout == 0 {
		p.DrainTimeout = DefaultSessionDrainTimeout
	}
	return p
}

// sweepEvery is how often a pool looks for idle sessions: a quarter of the
// idle TTL, between 10 ms and 1 s.
func (p SessionPolicy) sweepEvery() time.Duration {
	return min(max(p.IdleTTL/4, 10*time.Millisecond), time.Second)
}

// Session modes.
const (
	// ModeStrict: every call runs on the session's worker, queueing for it.
	ModeStrict = "strict"
	// ModeStrictFailFast: every call runs on the session's worker, or fails
	// at once with ErrSessionBusy when it has no free slot.
	ModeStrictFailFast = "strict-fail-fast"
	// ModeHint: the session's worker when it is free, any worker otherwise
	// (the session moves there; the result reports it).
	ModeHint = "hint"
)
