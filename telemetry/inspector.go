package telemetry

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Report is what the inspector sees of a runtime at one moment: every pool,
// its workers, how saturated it is and what to change. Its JSON form (snake
// case, every key always present) is a stable schema: the admin endpoint and
// `snakepit inspect --format json` emit it; testdata/inspect.golden.json pins it.
type Report struct {
	Time  time.Time    `json:"time"`
	Pools []PoolReport `json:"pools"`
}

// PoolReport is one pool. Complete derives Capacity, Load, Utilisation,
// Requests, Restarts, Saturation and Recommendations from the rest.
type PoolReport struct {
	Name    string `json:"name"`
	Profile string `json:"profile"` // "process" or "thread", as the workers run
	// Python is the workers' Python version, e.g. "3.11.2" ("" when no worker
	// answered). FreeThreaded: a Py_GIL_DISABLED build; GILEnabled: the GIL
	// is on at run time in at least one worker.
	Python       string `json:"python"`
	FreeThreaded bool   `json:"free_threaded"`
	GILEnabled   bool   `json:"gil_enabled"`
	// Size is the configured number of workers; Ready of them take calls.
	Size  int `json:"size"`
	Ready int `json:"ready"`
	// Failed: the pool gave up (restart intensity exceeded, boot failure).
	Failed     bool   `json:"failed"`
	FailReason string `json:"fail_reason"`
	// Capacity is the sum of the capacities of the workers that take calls
	// (ready, not retiring); Load the calls those workers run now;
	// Utilisation is Load/Capacity, 0..1 (0 when Capacity is 0).
	Capacity    int     `json:"capacity"`
	Load        int     `json:"load"`
	Utilisation float64 `json:"utilisation"`
	// Queued calls wait for a worker, in a queue bounded by QueueSize.
	Queued    int `json:"queued"`
	QueueSize int `json:"queue_size"`
	// NoFreeCapacity counts calls that had to wait in the queue; Saturated
	// calls refused because the queue was full. Both since the runtime
	// started.
	NoFreeCapacity int64 `json:"no_free_capacity"`
	Saturated      int64 `json:"saturated"`
	// RefusedSecondsAgo is how long before the report a call was last
	// refused because the queue was full (null: never).
	RefusedSecondsAgo *float64 `json:"refused_seconds_ago"`
	// Requests counts the calls the pool's workers served since the runtime
	// started, workers since replaced included; at least the sum of the
	// workers' Requests.
	Requests int64 `json:"requests"`
	// Restarts counts the pool's worker restarts since the runtime started,
	// workers since replaced included; at least the sum of the workers'.
	Restarts int `json:"restarts"`
	// Recycles counts the recycles done, by reason ("age", "requests",
	// "memory", "memory-hard-limit", "manual", "profile").
	Recycles map[string]int64 `json:"recycles"`
	// Sessions counts the sessions open (Runtime.OpenSession).
	Sessions int `json:"sessions"`
	// Uptime is how long the pool has run; 0 when unknown. JSON:
	// "uptime_seconds".
	Uptime time.Duration `json:"-"`
	// GILEnabledBy names the module whose import switched the GIL on in a
	// free-threaded worker, when Python's warning named it, and
	// GILEnabledWhen when the worker noticed ("adapter import", "first call
	// of tool X"); "" otherwise.
	GILEnabledBy   string `json:"gil_enabled_by"`
	GILEnabledWhen string `json:"gil_enabled_when"`
	// CallCPUFraction is the CPU time the workers' processes used per
	// second they had a call running (nil: not measured yet, under 1 s
	// busy). About 1 for CPU-bound Python under a GIL, whatever the thread
	// count; well below 1 for I/O-bound calls; above 1 for threads running
	// in parallel. It lets cpu-bound-on-gil-threads tell CPU-bound tools
	// from I/O-bound ones.
	CallCPUFraction *float64 `json:"call_cpu_fraction"`
	// Incomplete says which facts are missing and why ("" when none), e.g.
	// when no worker answered the stats query.
	Incomplete      string           `json:"incomplete"`
	Workers         []WorkerReport   `json:"workers"`
	Saturation      Saturation       `json:"saturation"`
	Recommendations []Recommendation `json:"recommendations"`
}

// WorkerReport is one worker of a pool.
type WorkerReport struct {
	ID       string `json:"id"`  // "<pool>-<n>"
	Pid      int    `json:"pid"` // 0 before its first start
	Ready    bool   `json:"ready"`
	Capacity int    `json:"capacity"`
	Load     int    `json:"load"`
	// Utilisation is Load/Capacity, 0..1.
	Utilisation float64 `json:"utilisation"`
	// Uptime is how long its current process has been ready. JSON:
	// "uptime_seconds".
	Uptime   time.Duration `json:"-"`
	Requests int64         `json:"requests"` // calls its current process served
	Restarts int           `json:"restarts"`
	Sessions int           `json:"sessions"` // sessions bound to its current process
	// RSS and PSS are its Python process's resident and proportional set
	// sizes in bytes (PSS shares pages among the processes that map them);
	// 0 when unknown.
	RSS      uint64 `json:"rss_bytes"`
	PSS      uint64 `json:"pss_bytes"`
	LastExit string `json:"last_exit"` // how its last process ended; "" while its first runs
	Retiring bool   `json:"retiring"`  // recycled, finishing its calls
	Starting bool   `json:"starting"`  // a replacement not ready yet
}

// Saturation levels.
const (
	LevelOK       = "ok"
	LevelWarn     = "warn"
	LevelCritical = "critical"
)

// Saturation is how close a pool is to refusing calls.
type Saturation struct {
	Level string `json:"level"` // LevelOK, LevelWarn or LevelCritical
	Why   string `json:"why"`   // the numbers behind Level
}

// Recommendation severities.
const (
	SeverityInfo     = "info"
	SeverityWarn     = "warn"
	SeverityCritical = "critical"
)

// Recommendation is what one rule advises for one pool.
type Recommendation struct {
	Rule     string `json:"rule"`     // the rule's stable id, e.g. "queue-often-full"
	Severity string `json:"severity"` // SeverityInfo, SeverityWarn or SeverityCritical
	Message  string `json:"message"`  // what to do, citing the numbers
	// Evidence holds the numbers that made the rule fire, by name.
	Evidence map[string]float64 `json:"evidence"`
}

// MarshalJSON writes Uptime as "uptime_seconds".
func (p PoolReport) MarshalJSON() ([]byte, error) {
	type plain PoolReport
	return json.Marshal(struct {
		plain
		Uptime float64 `json:"uptime_seconds"`
	}{plain(p), p.Uptime.Seconds()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (p *PoolReport) UnmarshalJSON(b []byte) error {
	type plain PoolReport
	var v struct {
		plain
		Uptime float64 `json:"uptime_seconds"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = PoolReport(v.plain)
	p.Uptime = seconds(v.Uptime)
	return nil
}

// MarshalJSON writes Uptime as "uptime_seconds".
func (w WorkerReport) MarshalJSON() ([]byte, error) {
	type plain WorkerReport
	return json.Marshal(struct {
		plain
		Uptime float64 `json:"uptime_seconds"`
	}{plain(w), w.Uptime.Seconds()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (w *WorkerReport) UnmarshalJSON(b []byte) error {
	type plain WorkerReport
	var v struct {
		plain
		Uptime float64 `json:"uptime_seconds"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*w = WorkerReport(v.plain)
	w.Uptime = seconds(v.Uptime)
	return nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Complete derives a pool's totals from its workers (Capacity, Load,
// Utilisation, each worker's Utilisation; Requests and Restarts become at
// least the sums of the workers'), then runs
// the saturation check and the rules with th (zero fields: defaults). Nil
// maps and slices become empty so the JSON keeps its shape.
func Complete(p PoolReport, th Thresholds, rules []Rule) PoolReport {
	p.Capacity, p.Load = 0, 0
	p.Workers = append([]WorkerReport{}, p.Workers...)
	var requests int64
	var restarts int
	for i := range p.Workers {
		w := &p.Workers[i]
		w.Utilisation = ratio(w.Load, w.Capacity)
		requests += w.Requests
		restarts += w.Restarts
		if w.Ready && !w.Retiring {
			p.Capacity += w.Capacity
			p.Load += w.Load
		}
	}
	p.Requests, p.Restarts = max(p.Requests, requests), max(p.Restarts, restarts)
	p.Utilisation = ratio(p.Load, p.Capacity)
	if p.Recycles == nil {
		p.Recycles = map[string]int64{}
	}
	p.Saturation = CheckSaturation(p, th)
	p.Recommendations = Recommend(p, th, rules)
	return p
}

// ratio is n/d clamped to 0..1 (0 when d is 0).
func ratio(n, d int) float64 {
	if d <= 0 || n <= 0 {
		return 0
	}
	return min(1, float64(n)/float64(d))
}

// CheckSaturation rates a completed pool: critical when the queue is at
// least th.QueueCritical full or calls were refused (Saturated > 0), warn
// when utilisation is at least th.UtilisationWarn or a call is queued, ok
// otherwise. Why cites the numbers.
func CheckSaturation(p PoolReport, th Thresholds) Saturation {
	th = th.withDefaults()
	var crit, warn []string
	past := "" // an old refusal: told, without raising the level
	if p.QueueSize > 0 && float64(p.Queued) >= th.QueueCritical*float64(p.QueueSize) {
		crit = append(crit, fmt.Sprintf("queue %d/%d is ≥ %s full", p.Queued, p.QueueSize, pct(th.QueueCritical)))
	}
	if p.Saturated > 0 {
		msg := fmt.Sprintf("%d calls refused (queue full) since start", p.Saturated)
		if p.RefusedSecondsAgo == nil || *p.RefusedSecondsAgo <= th.RecentRefusal.Seconds() {
			crit = append(crit, msg+lastRefusal(p))
		} else {
			past = msg + lastRefusal(p)
		}
	}
	if p.Utilisation >= th.UtilisationWarn {
		warn = append(warn, fmt.Sprintf("utilisation %s (%d/%d) ≥ %s", pct(p.Utilisation), p.Load, p.Capacity, pct(th.UtilisationWarn)))
	}
	if p.Queued > 0 && len(crit) == 0 {
		warn = append(warn, fmt.Sprintf("%d calls queued", p.Queued))
	}
	switch {
	case len(crit) > 0:
		return Saturation{Level: LevelCritical, Why: strings.Join(append(crit, warn...), "; ")}
	case len(warn) > 0:
		return Saturation{Level: LevelWarn, Why: strings.Join(append(warn, nonEmpty(past)...), "; ")}
	}
	why := fmt.Sprintf("utilisation %s (%d/%d), queue empty", pct(p.Utilisation), p.Load, p.Capacity)
	return Saturation{Level: LevelOK, Why: strings.Join(append([]string{why}, nonEmpty(past)...), "; ")}
}

// lastRefusal says how long ago the last refusal was, when known.
func lastRefusal(p PoolReport) string {
	if p.RefusedSecondsAgo == nil {
		return ""
	}
	return fmt.Sprintf(", the last %s ago", shortDuration(seconds(*p.RefusedSecondsAgo)))
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// pct formats a 0..1 fraction as a whole percentage.
func pct(f float64) string { return fmt.Sprintf("%.0f%%", f*100) }
