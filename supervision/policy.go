package supervision

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Policy is how a supervisor reacts to its children failing.
type Policy struct {
	// Type says which exits a worker is restarted after: "permanent" (all),
	// "transient" (abnormal ones: not an exit with code 0) or "temporary"
	// (none; a pool whose workers are all gone fails). Default "permanent".
	Type RestartType
	// MaxRestarts is the restart intensity: at most this many restarts within
	// Period; one more and the supervisor gives up. Default 10.
	MaxRestarts int
	// Period is the window MaxRestarts counts over. Default 60s.
	Period time.Duration
	// InitialBackoff is the delay before a child's first restart within
	// Period; it doubles with each further restart of that child. Default
	// 100ms, or MaxBackoff when that is smaller.
	InitialBackoff time.Duration
	// MaxBackoff caps the delay. Default 10s.
	MaxBackoff time.Duration
	// Jitter spreads each delay uniformly over ±Jitter of itself (0 to 1).
	// Default 0.2.
	Jitter float64
}

// DefaultPolicy returns the documented defaults.
func DefaultPolicy() Policy {
	return Policy{Type: Permanent, MaxRestarts: 10, Period: time.Minute, InitialBackoff: 100 * time.Millisecond,
		MaxBackoff: 10 * time.Second, Jitter: 0.2}
}

// WithDefaults fills every zero field with its default.
func (p Policy) WithDefaults() Policy {
	d := DefaultPolicy()
	if p.MaxRestarts == 0 {
		p.MaxRestarts = d.MaxRestarts
	}
	if p.Period == 0 {
		p.Period = d.Period
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = d.MaxBackoff
	}
	if p.InitialBackoff == 0 {
		p.InitialBackoff = d.InitialBackoff
		if p.MaxBackoff > 0 && p.MaxBackoff < p.InitialBackoff {
			p.InitialBackoff = p.MaxBackoff // capped, as every delay is
		}
	}
	if p.Jitter == 0 {
		p.Jitter = d.Jitter
	}
	if p.Type == "" {
		p.Type = Permanent
	}
	return p
}

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Decision is what to do about one failed child.
type Decision struct {
	// Restart is false when the supervisor gives up.
	Restart bool
	// Delay is how long to wait before restarting.
	Delay time.Duration
	// Restarts is the number of restarts within the period, this one included.
	Restarts int
	// Reason explains a decision not to restart.
	Reason string
	// Escalate is true when the supervisor gives up on all its children
	// (restart intensity exceeded): the pool fails. False with Restart
	// false means only this child is let go (its restart type).
	Escalate bool
}

// Supervisor records restarts and decides. It is not safe for concurrent
// use: one actor owns it.
type Supervisor struct {
	policy   Policy
	clock    Clock
	random   func() float64 // in [0,1)
	all      []time.Time
	perChild map[string][]time.Time
}

// New returns a Supervisor for policy (zero fields take their defaults). A
// nil clock means the system clock; a nil random means math/rand.
func New(policy Policy, clock Clock, random func() float64) *Supervisor {
	if clock == nil {
		clock = SystemClock{}
	}
	if random == nil {
		random = rand.Float64
	}
	return &Supervisor{policy: policy.WithDefaults(), clock: clock, random: random, perChild: map[string][]time.Time{}}
}

// Decide records that child ended with exit and says whether and when to
// restart it. Recycles never reach it: they are not failures.
func (s *Supervisor) Decide(child string, exit Exit) Decision {
	if !s.policy.Type.wantsRestart(exit) {
		return Decision{Reason: fmt.Sprintf("a %s worker is not restarted after it %s", s.policy.Type, exit)}
	}
	now := s.clock.Now()
	s.all = within(s.all, now, s.policy.Period)
	if len(s.all) >= s.policy.MaxRestarts {
		return Decision{Restarts: len(s.all), Escalate: true, Reason: fmt.Sprintf(
			"restart intensity exceeded: %d restarts within %s (PoolConfig.MaxRestarts / RestartPeriod)",
			len(s.all), s.policy.Period)}
	}
	mine := within(s.perChild[child], now, s.policy.Period)
	delay := s.Backoff(len(mine))
	s.all = append(s.all, now)
	s.perChild[child] = append(mine, now)
	return Decision{Restart: true, Delay: delay, Restarts: len(s.all)}
}

// Period is the window the restart intensity counts over.
func (s *Supervisor) Period() time.Duration { return s.policy.Period }

// Type is the restart type of the supervisor's children.
func (s *Supervisor) Type() RestartType { return s.policy.Type }

// Forget drops what the supervisor remembers of child's restarts (its
// backoff); the pool-wide intensity keeps counting them. Call it when a
// child is gone for good.
func (s *Supervisor) Forget(child string) { delete(s.perChild, child) }

// Backoff is the delay before a restart that follows n recent restarts of
// the same child: InitialBackoff·2ⁿ, capped at MaxBackoff, then jittered.
func (s *Supervisor) Backoff(n int) time.Duration {
	base := float64(s.policy.InitialBackoff) * math.Pow(2, float64(n))
	base = math.Min(base, float64(s.policy.MaxBackoff))
	j := s.policy.Jitter * (2*s.random() - 1)
	return time.Duration(math.Min(base*(1+j), float64(s.policy.MaxBackoff)))
}

// within keeps the times not older than period before now.
func within(ts []time.Time, now time.Time, period time.Duration) []time.Time {
	i := 0
	for i < len(ts) && now.Sub(ts[i]) > period {
		i++
	}
	return ts[i:]
}
