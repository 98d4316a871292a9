package supervision

import (
	"fmt"
	"time"
)

// RecycleReason says why a worker was replaced. A recycle is not a failure:
// it never counts against the restart intensity.
type RecycleReason string

// The reasons a worker is recycled.
const (
	RecycleAge             RecycleReason = "age"
	RecycleRequests        RecycleReason = "requests"
	RecycleMemory          RecycleReason = "memory"
	RecycleMemoryHardLimit RecycleReason = "memory-hard-limit"
	RecycleManual          RecycleReason = "manual"
	// RecycleProfile: the pool changed profile (auto falling back to
	// processes when a free-threaded worker's GIL got switched on).
	RecycleProfile RecycleReason = "profile"
)

// Graceful reports whether a worker recycled for r is drained (a replacement
// is ready first, in-flight calls finish) rather than killed at once.
func (r RecycleReason) Graceful() bool { return r != RecycleMemoryHardLimit }

// RecyclePolicy is when a pool replaces its workers. Every trigger is off
// unless set.
type RecyclePolicy struct {
	// MaxAge recycles a worker once it has run this long (a TTL). Each worker
	// gets its own limit between MaxAge and MaxAge+AgeJitter. Default: off.
	MaxAge time.Duration
	// AgeJitter spreads the workers' age limits: the limits of any two
	// workers of a pool differ by at least AgeJitter/(2·Size), so they never
	// recycle together. Default: MaxAge/10.
	AgeJitter time.Duration
	// MaxRequests recycles a worker once it has served this many calls. Each
	// worker gets its own limit between MaxRequests and
	// MaxRequests+RequestsJitter. Default: off.
	MaxRequests int64
	// RequestsJitter spreads the workers' request limits like AgeJitter; at
	// least Size, so that no two workers share a limit. Default: the larger
	// of MaxRequests/10 and Size.
	RequestsJitter int64
	// MaxMemory recycles a worker whose Python process's resident memory
	// (RSS, read from /proc) exceeds it, in bytes. Default: off.
	MaxMemory uint64
	// HardMemoryLimit kills a worker at once, without draining, when its RSS
	// exceeds it, in bytes; calls it was running fail with ErrWorkerCrashed.
	// Must be above MaxMemory when both are set. Default: off.
	HardMemoryLimit uint64
	// MinLifetime protects a young worker from every recycle but the hard
	// memory limit. Default 0.
	MinLifetime time.Duration
	// CheckInterval is how often the lifecycle actor checks the workers (and
	// samples their memory). Default 1s.
	CheckInterval time.Duration
	// DrainTimeout bounds how long a recycled worker may take to finish its
	// in-flight calls once its replacement is ready; then it is stopped like
	// on Stop (Config.ShutdownGrace, then signals). Default 30s.
	DrainTimeout time.Duration
	// MaxConcurrent is how many workers of a pool may recycle at once, so
	// capacity never collapses. Default 1.
	MaxConcurrent int
}

// Recycle defaults.
const (
	DefaultCheckInterval = time.Second
	DefaultDrainTimeout  = 30 * time.Second
)

// WithDefaults fills the zero fields with their defaults for a pool of size
// workers.
func (p RecyclePolicy) WithDefaults(size int) RecyclePolicy {
	if p.AgeJitter == 0 {
		p.AgeJitter = p.MaxAge / 10
	}
	if p.RequestsJitter == 0 && p.MaxRequests > 0 {
		p.RequestsJitter = max(p.MaxRequests/10, int64(size))
	}
	if p.CheckInterval == 0 {
		p.CheckInterval = DefaultCheckInterval
	}
	if p.DrainTimeout == 0 {
		p.DrainTimeout = DefaultDrainTimeout
	}
	if p.MaxConcurrent == 0 {
		p.MaxConcurrent = 1
	}
	return p
}

// Enabled reports whether any scheduled trigger is set.
func (p RecyclePolicy) Enabled() bool {
	return p.MaxAge > 0 || p.MaxRequests > 0 || p.MaxMemory > 0 || p.HardMemoryLimit > 0
}

// SamplesMemory reports whether the policy needs the workers' RSS.
func (p RecyclePolicy) SamplesMemory() bool { return p.MaxMemory > 0 || p.HardMemoryLimit > 0 }

// Spread places a worker's limits within the jitter: the worker in slot
// (0 ≤ slot < size) gets a fraction in [slot/size, (slot+½)/size), u in [0,1)
// choosing where. Two slots' fractions are at least 1/(2·size) apart — a
// guaranteed spread, not just a random one.
func Spread(slot, size int, u float64) float64 {
	if size <= 0 {
		return 0
	}
	return (float64(slot) + u/2) / float64(size)
}

// WorkerFacts are what the policy looks at for one worker.
type WorkerFacts struct {
	Started  time.Time
	Requests int64
	RSS      uint64 // 0: not sampled
	Spread   float64
}

// Verdict is a decision to recycle one worker.
type Verdict struct {
	Reason RecycleReason
	// Detail gives the numbers behind the decision.
	Detail string
}

// Check says whether the worker described by f is due for a recycle at now.
// The hard memory limit comes first and ignores MinLifetime.
func (p RecyclePolicy) Check(f WorkerFacts, now time.Time) (Verdict, bool) {
	if p.HardMemoryLimit > 0 && f.RSS > p.HardMemoryLimit {
		return Verdict{RecycleMemoryHardLimit, fmt.Sprintf("RSS %s over the hard limit %s",
			FormatBytes(f.RSS), FormatBytes(p.HardMemoryLimit))}, true
	}
	age := now.Sub(f.Started)
	if age < p.MinLifetime {
		return Verdict{}, false
	}
	if p.MaxMemory > 0 && f.RSS > p.MaxMemory {
		return Verdict{RecycleMemory, fmt.Sprintf("RSS %s over %s", FormatBytes(f.RSS), FormatBytes(p.MaxMemory))}, true
	}
	if limit := p.RequestLimit(f.Spread); p.MaxRequests > 0 && f.Requests >= limit {
		return Verdict{RecycleRequests, fmt.Sprintf("served %d calls, its limit is %d", f.Requests, limit)}, true
	}
	if limit := p.AgeLimit(f.Spread); p.MaxAge > 0 && age >= limit {
		return Verdict{RecycleAge, fmt.Sprintf("up %s, its limit is %s", age.Round(time.Millisecond), limit.Round(time.Millisecond))}, true
	}
	return Verdict{}, false
}

// AgeLimit is the age limit of a worker placed at spread.
func (p RecyclePolicy) AgeLimit(spread float64) time.Duration {
	return p.MaxAge + time.Duration(float64(p.AgeJitter)*spread)
}

// RequestLimit is the request limit of a worker placed at spread.
func (p RecyclePolicy) RequestLimit(spread float64) int64 {
	return p.MaxRequests + int64(float64(p.RequestsJitter)*spread)
}

// FormatBytes writes n in the largest binary unit that keeps it ≥ 1.
func FormatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
