package telemetry

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Thresholds tune the saturation check and the rules. A zero field means
// its default.
type Thresholds struct {
	// UtilisationWarn: saturation warns at this utilisation. Default 0.80.
	UtilisationWarn float64
	// RecentRefusal: a call refused (queue full) within this long before the
	// report makes saturation critical; an older refusal is only mentioned.
	// Default 1m.
	RecentRefusal time.Duration
	// QueueCritical: saturation is critical when the queue is this full.
	// Default 0.80.
	QueueCritical float64
	// CPUBoundFraction: cpu-bound-on-gil-threads fires when calls spend at
	// least this share of their time on CPU. Default 0.50.
	CPUBoundFraction float64
	// QueueWaitFraction and MinQueuedCalls: queue-often-full fires when at
	// least MinQueuedCalls calls had to wait and they are at least this
	// share of the calls served. Defaults 0.10 and 5.
	QueueWaitFraction float64
	MinQueuedCalls    int64
	// MemoryRecycles and MemoryRecyclesPerHour: frequent-memory-recycles
	// fires at this many memory recycles, or at two or more at this rate
	// per hour of the pool's uptime (when known). Defaults 3 and 6.
	MemoryRecycles        int64
	MemoryRecyclesPerHour float64
	// Restarts: restarts-high fires at this many restarts. Default 3.
	Restarts int
	// IdleUtilisation and IdleMinWorkers: idle-capacity fires when a pool
	// of at least IdleMinWorkers workers is at most this busy and has never
	// queued a call. Defaults 0.10 and 4.
	IdleUtilisation float64
	IdleMinWorkers  int
}

// DefaultThresholds returns the thresholds a zero Thresholds stands for.
func DefaultThresholds() Thresholds { return Thresholds{}.withDefaults() }

func (t Thresholds) withDefaults() Thresholds {
	def := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&t.UtilisationWarn, 0.80)
	if t.RecentRefusal == 0 {
		t.RecentRefusal = time.Minute
	}
	def(&t.QueueCritical, 0.80)
	def(&t.CPUBoundFraction, 0.50)
	def(&t.QueueWaitFraction, 0.10)
	def(&t.MemoryRecyclesPerHour, 6)
	def(&t.IdleUtilisation, 0.10)
	t.MinQueuedCalls = cmpOr(t.MinQueuedCalls, 5)
	t.MemoryRecycles = cmpOr(t.MemoryRecycles, 3)
	t.Restarts = cmpOr(t.Restarts, 3)
	t.IdleMinWorkers = cmpOr(t.IdleMinWorkers, 4)
	return t
}

func cmpOr[T int | int64](v, d T) T {
	if v == 0 {
		return d
	}
	return v
}

// Rule is one explicit recommendation rule. Check looks at a completed pool
// (thresholds with their defaults filled in) and says whether it fires;
// Recommend stamps the rule's ID on what it returns.
type Rule struct {
	ID      string // stable, e.g. "queue-often-full"
	Summary string // when it fires, in one line
	Check   func(p PoolReport, th Thresholds) (Recommendation, bool)
}

// DefaultRules returns the built-in rules, in the order their
// recommendations are listed (docs/inspector.md describes each).
func DefaultRules() []Rule {
	return []Rule{
		{"queue-often-full", "calls were refused, or many calls waited for a worker: add workers", queueOftenFull},
		{"cpu-bound-on-gil-threads", "thread profile on a GIL-enabled Python running CPU-bound calls: use processes or a free-threaded Python", cpuBoundOnGILThreads},
		{"gil-enabled-free-threaded-build", "free-threaded Python whose GIL an extension re-enabled", gilEnabledFreeThreaded},
		{"frequent-memory-recycles", "workers often recycled for memory: fix the leak or raise RecyclePolicy.MaxMemory", frequentMemoryRecycles},
		{"restarts-high", "workers restarted often: read their LastExit", restartsHigh},
		{"idle-capacity", "many workers, almost no load: fewer workers", idleCapacity},
	}
}

// Recommend runs rules (nil: DefaultRules) on a completed pool and returns
// what fired, never nil.
func Recommend(p PoolReport, th Thresholds, rules []Rule) []Recommendation {
	if rules == nil {
		rules = DefaultRules()
	}
	th = th.withDefaults()
	out := []Recommendation{}
	for _, r := range rules {
		rec, ok := r.Check(p, th)
		if !ok {
			continue
		}
		rec.Rule = r.ID
		if rec.Evidence == nil {
			rec.Evidence = map[string]float64{}
		}
		out = append(out, rec)
	}
	return out
}

// queueOftenFull: any refused call, or at least MinQueuedCalls calls that
// waited making up QueueWaitFraction of the calls served.
func queueOftenFull(p PoolReport, th Thresholds) (Recommendation, bool) {
	waited := math.Min(1, float64(p.NoFreeCapacity)/math.Max(1, float64(p.Requests)))
	often := p.NoFreeCapacity >= th.MinQueuedCalls && waited >= th.QueueWaitFraction
	if p.Saturated == 0 && !often {
		return Recommendation{}, false
	}
	want := suggestedSize(p)
	sev := SeverityWarn
	if p.Saturated > 0 {
		sev = SeverityCritical
	}
	msg := fmt.Sprintf("%d calls waited for a free worker against %d served (%s)", p.NoFreeCapacity, p.Requests, pct(waited))
	if p.Saturated > 0 {
		msg += fmt.Sprintf(" and %d were refused with ErrPoolSaturated", p.Saturated)
	}
	msg += fmt.Sprintf(" (queue now %d/%d): raise PoolConfig.Size from %d to about %d, or make calls shorter; "+
		"a larger QueueSize only makes calls wait longer", p.Queued, p.QueueSize, p.Size, want)
	return Recommendation{Severity: sev, Message: msg, Evidence: map[string]float64{
		"no_free_capacity": float64(p.NoFreeCapacity), "saturated": float64(p.Saturated), "requests": float64(p.Requests),
		"waited_fraction": round3(waited), "queued": float64(p.Queued), "queue_size": float64(p.QueueSize),
		"size": float64(p.Size), "suggested_size": float64(want)}}, true
}

// suggestedSize is enough workers for the calls running and queued now, and
// at least half as many again as today.
func suggestedSize(p PoolReport) int {
	perWorker := 1.0
	if p.Ready > 0 && p.Capacity > 0 {
		perWorker = float64(p.Capacity) / float64(p.Ready)
	}
	demand := int(math.Ceil(float64(p.Load+p.Queued) / perWorker))
	return max(demand, p.Size+1, int(math.Ceil(float64(p.Size)*1.5)))
}

// cpuBoundOnGILThreads: thread profile, GIL on, and calls measured CPU-bound
// (or, unmeasured, the pool busy).
func cpuBoundOnGILThreads(p PoolReport, th Thresholds) (Recommendation, bool) {
	if p.Profile != "thread" || !p.GILEnabled {
		return Recommendation{}, false
	}
	ev := map[string]float64{"utilisation": round3(p.Utilisation), "capacity": float64(p.Capacity), "size": float64(p.Size)}
	fix := fmt.Sprintf("use Profile \"process\" with Size %d (one process per thread you have now), or a free-threaded Python 3.13t with Profile \"auto\"; "+
		"ignore this if the tools release the GIL (numpy, I/O)", max(p.Capacity, p.Size))
	if f := p.CallCPUFraction; f != nil {
		if *f < th.CPUBoundFraction {
			return Recommendation{}, false
		}
		ev["call_cpu_fraction"] = round3(*f)
		return Recommendation{Severity: SeverityWarn, Evidence: ev, Message: fmt.Sprintf(
			"the workers used %.2f s of CPU per second they ran calls, in thread-profile workers whose GIL is on (Python %s): CPU-bound Python; "+
				"their threads take turns, so each worker runs about one call at a time: %s", *f, p.Python, fix)}, true
	}
	if p.Utilisation < th.UtilisationWarn {
		return Recommendation{}, false
	}
	return Recommendation{Severity: SeverityInfo, Evidence: ev, Message: fmt.Sprintf(
		"pool is %s busy (%d/%d) in thread-profile workers whose GIL is on (Python %s): if its calls are CPU-bound Python, "+
			"the threads take turns and each worker runs about one call at a time: %s", pct(p.Utilisation), p.Load, p.Capacity, p.Python, fix)}, true
}

// gilEnabledFreeThreaded: a free-threaded build running with the GIL on.
func gilEnabledFreeThreaded(p PoolReport, _ Thresholds) (Recommendation, bool) {
	if !p.FreeThreaded || !p.GILEnabled {
		return Recommendation{}, false
	}
	effect := "Profile \"auto\" falls back to processes on it"
	if p.Profile == "thread" {
		effect = "its thread-profile workers run Python one thread at a time"
	}
	who := "an extension module without free-threading support re-enabled it on import (Python's RuntimeWarning in the worker logs names it)"
	if p.GILEnabledBy != "" {
		who = fmt.Sprintf("module %s re-enabled it on import (%s): it does not declare free-threading support", p.GILEnabledBy, p.GILEnabledWhen)
	}
	return Recommendation{Severity: SeverityWarn, Evidence: map[string]float64{"free_threaded": 1, "gil_enabled": 1}, Message: fmt.Sprintf(
		"Python %s is a free-threaded build but its GIL is on: %s; %s. Upgrade or drop that extension, "+
			"or run Profile \"process\"", p.Python, who, effect)}, true
}

// frequentMemoryRecycles: many recycles for memory, or a high rate of them.
func frequentMemoryRecycles(p PoolReport, th Thresholds) (Recommendation, bool) {
	soft, hard := p.Recycles["memory"], p.Recycles["memory-hard-limit"]
	n := soft + hard
	ev := map[string]float64{"memory": float64(soft), "memory_hard_limit": float64(hard), "max_rss_bytes": float64(maxRSS(p))}
	rate := ""
	fires := n >= th.MemoryRecycles
	if h := p.Uptime.Hours(); h > 0 && n >= 2 {
		perHour := float64(n) / h
		ev["per_hour"] = round3(perHour)
		rate = fmt.Sprintf(", %.1f per hour over %s", perHour, shortDuration(p.Uptime))
		fires = fires || perHour >= th.MemoryRecyclesPerHour
	}
	if !fires {
		return Recommendation{}, false
	}
	sev := SeverityWarn
	if hard > 0 {
		sev = SeverityCritical
	}
	return Recommendation{Severity: sev, Evidence: ev, Message: fmt.Sprintf(
		"%d workers recycled for memory (%d at RecyclePolicy.MaxMemory, %d at HardMemoryLimit%s): their memory grows with the calls they serve. "+
			"If it is a leak, find it (tracemalloc in a tool); if the working set is simply larger, raise RecyclePolicy.MaxMemory "+
			"(largest RSS now %s)", n, soft, hard, rate, formatBytes(maxRSS(p)))}, true
}

func maxRSS(p PoolReport) uint64 {
	var m uint64
	for _, w := range p.Workers {
		m = max(m, w.RSS)
	}
	return m
}

// restartsHigh: at least th.Restarts restarts; cites the most restarted
// worker's last exit.
func restartsHigh(p PoolReport, th Thresholds) (Recommendation, bool) {
	if p.Restarts < th.Restarts {
		return Recommendation{}, false
	}
	var worst WorkerReport
	for _, w := range p.Workers {
		if w.Restarts > worst.Restarts {
			worst = w
		}
	}
	sev := SeverityWarn
	if p.Failed {
		sev = SeverityCritical
	}
	msg := fmt.Sprintf("workers restarted %d times (most: %s, %d times; its last exit: %q): read LastExit and the worker logs",
		p.Restarts, worst.ID, worst.Restarts, worst.LastExit)
	if strings.Contains(worst.LastExit, "SIGKILL") && !strings.Contains(worst.LastExit, "runtime") {
		msg += "; a SIGKILL nobody sent is often the kernel's OOM killer (check dmesg; set RecyclePolicy.MaxMemory below the limit)"
	}
	return Recommendation{Severity: sev, Message: msg, Evidence: map[string]float64{
		"restarts": float64(p.Restarts), "max_worker_restarts": float64(worst.Restarts)}}, true
}

// idleCapacity: a pool of many workers, all up, barely busy, that never
// queued a call.
func idleCapacity(p PoolReport, th Thresholds) (Recommendation, bool) {
	if p.Size < th.IdleMinWorkers || p.Ready < p.Size || p.Utilisation > th.IdleUtilisation ||
		p.Queued > 0 || p.NoFreeCapacity > 0 || p.Saturated > 0 {
		return Recommendation{}, false
	}
	want := max(1, int(math.Ceil(float64(p.Size)/2)))
	return Recommendation{Severity: SeverityInfo, Evidence: map[string]float64{
		"utilisation": round3(p.Utilisation), "size": float64(p.Size), "no_free_capacity": 0, "suggested_size": float64(want)},
		Message: fmt.Sprintf("%d workers are %s busy (%d/%d) and no call ever waited for one: PoolConfig.Size %d would do "+
			"and save their memory; utilisation is a snapshot, so check it at your peak first",
			p.Size, pct(p.Utilisation), p.Load, p.Capacity, want)}, true
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }
