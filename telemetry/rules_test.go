package telemetry

import (
	"strings"
	"testing"
	"time"
)

func f64(v float64) *float64 { return &v }

// workers returns n ready workers of capacity c with load busy each.
func workers(n, c, busy int, mod func(i int, w *WorkerReport)) []WorkerReport {
	var ws []WorkerReport
	for i := 0; i < n; i++ {
		w := WorkerReport{ID: "p-" + string(rune('0'+i)), Pid: 100 + i, Ready: true, Capacity: c, Load: busy, Requests: 10}
		if mod != nil {
			mod(i, &w)
		}
		ws = append(ws, w)
	}
	return ws
}

func TestRules(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rule     string
		pool     PoolReport
		fires    bool
		severity string
		evidence map[string]float64 // a subset of the evidence
		message  []string           // substrings of the message
	}{
		// queue-often-full
		{name: "refused calls", rule: "queue-often-full", fires: true, severity: SeverityCritical,
			pool:     PoolReport{Size: 1, Ready: 1, Saturated: 3, QueueSize: 1, Queued: 1, Workers: workers(1, 1, 1, nil)},
			evidence: map[string]float64{"saturated": 3, "size": 1, "suggested_size": 2, "queue_size": 1},
			message:  []string{"and 3 were refused", "PoolConfig.Size from 1 to about 2"}},
		{name: "many waited", rule: "queue-often-full", fires: true, severity: SeverityWarn,
			pool: PoolReport{Size: 2, Ready: 2, NoFreeCapacity: 30, Queued: 6, QueueSize: 100,
				Workers: workers(2, 1, 1, func(_ int, w *WorkerReport) { w.Requests = 50 })},
			evidence: map[string]float64{"no_free_capacity": 30, "requests": 100, "waited_fraction": 0.3, "suggested_size": 8},
			message:  []string{"30 calls waited", "against 100 served (30%)", "from 2 to about 8"}},
		{name: "few waited", rule: "queue-often-full",
			pool: PoolReport{Size: 2, Ready: 2, NoFreeCapacity: 4, Workers: workers(2, 1, 0, nil)}},
		{name: "waits rare relative to requests", rule: "queue-often-full",
			pool: PoolReport{Size: 2, Ready: 2, NoFreeCapacity: 9, Workers: workers(2, 1, 0, func(_ int, w *WorkerReport) { w.Requests = 500 })}},

		// cpu-bound-on-gil-threads
		{name: "measured cpu-bound", rule: "cpu-bound-on-gil-threads", fires: true, severity: SeverityWarn,
			pool:     PoolReport{Profile: "thread", Python: "3.11.2", GILEnabled: true, Size: 2, Ready: 2, CallCPUFraction: f64(0.8), Workers: workers(2, 4, 0, nil)},
			evidence: map[string]float64{"call_cpu_fraction": 0.8, "capacity": 8},
			message:  []string{"used 0.80 s of CPU per second", "Python 3.11.2", `Profile "process" with Size 8`}},
		{name: "measured I/O-bound", rule: "cpu-bound-on-gil-threads",
			pool: PoolReport{Profile: "thread", GILEnabled: true, Size: 2, Ready: 2, CallCPUFraction: f64(0.1), Workers: workers(2, 4, 4, nil)}},
		{name: "unmeasured and busy", rule: "cpu-bound-on-gil-threads", fires: true, severity: SeverityInfo,
			pool:     PoolReport{Profile: "thread", Python: "3.12.1", GILEnabled: true, Size: 1, Ready: 1, Workers: workers(1, 4, 4, nil)},
			evidence: map[string]float64{"utilisation": 1, "capacity": 4},
			message:  []string{"100% busy (4/4)", "if its calls are CPU-bound"}},
		{name: "unmeasured and quiet", rule: "cpu-bound-on-gil-threads",
			pool: PoolReport{Profile: "thread", GILEnabled: true, Size: 1, Ready: 1, Workers: workers(1, 4, 1, nil)}},
		{name: "GIL off", rule: "cpu-bound-on-gil-threads",
			pool: PoolReport{Profile: "thread", FreeThreaded: true, Size: 1, Ready: 1, CallCPUFraction: f64(1), Workers: workers(1, 4, 4, nil)}},
		{name: "process profile", rule: "cpu-bound-on-gil-threads",
			pool: PoolReport{Profile: "process", GILEnabled: true, Size: 1, Ready: 1, CallCPUFraction: f64(1), Workers: workers(1, 1, 1, nil)}},

		// gil-enabled-free-threaded-build
		{name: "free-threaded, GIL re-enabled, thread profile", rule: "gil-enabled-free-threaded-build", fires: true, severity: SeverityWarn,
			pool:     PoolReport{Profile: "thread", Python: "3.13.1", FreeThreaded: true, GILEnabled: true},
			evidence: map[string]float64{"free_threaded": 1, "gil_enabled": 1},
			message:  []string{"Python 3.13.1 is a free-threaded build", "one thread at a time"}},
		{name: "free-threaded, GIL re-enabled, auto fell back", rule: "gil-enabled-free-threaded-build", fires: true, severity: SeverityWarn,
			pool:    PoolReport{Profile: "process", FreeThreaded: true, GILEnabled: true},
			message: []string{`"auto" falls back to processes`}},
		{name: "free-threaded, GIL off", rule: "gil-enabled-free-threaded-build",
			pool: PoolReport{Profile: "thread", FreeThreaded: true}},
		{name: "default build", rule: "gil-enabled-free-threaded-build",
			pool: PoolReport{Profile: "process", GILEnabled: true}},

		// frequent-memory-recycles
		{name: "three memory recycles", rule: "frequent-memory-recycles", fires: true, severity: SeverityWarn,
			pool: PoolReport{Recycles: map[string]int64{"memory": 3, "age": 10},
				Workers: workers(2, 1, 0, func(i int, w *WorkerReport) { w.RSS = uint64(i+1) << 29 })},
			evidence: map[string]float64{"memory": 3, "memory_hard_limit": 0, "max_rss_bytes": 1 << 30},
			message:  []string{"3 workers recycled for memory", "raise RecyclePolicy.MaxMemory", "largest RSS now 1.0 GiB"}},
		{name: "hard limit hit", rule: "frequent-memory-recycles", fires: true, severity: SeverityCritical,
			pool:     PoolReport{Recycles: map[string]int64{"memory": 1, "memory-hard-limit": 2}},
			evidence: map[string]float64{"memory": 1, "memory_hard_limit": 2}},
		{name: "two in 10 minutes", rule: "frequent-memory-recycles", fires: true, severity: SeverityWarn,
			pool:     PoolReport{Recycles: map[string]int64{"memory": 2}, Uptime: 10 * time.Minute},
			evidence: map[string]float64{"per_hour": 12},
			message:  []string{"12.0 per hour over 10m0s"}},
		{name: "two in a day", rule: "frequent-memory-recycles",
			pool: PoolReport{Recycles: map[string]int64{"memory": 2}, Uptime: 24 * time.Hour}},
		{name: "age recycles only", rule: "frequent-memory-recycles",
			pool: PoolReport{Recycles: map[string]int64{"age": 50, "requests": 50}}},

		// restarts-high
		{name: "many restarts", rule: "restarts-high", fires: true, severity: SeverityWarn,
			pool: PoolReport{Workers: workers(2, 1, 0, func(i int, w *WorkerReport) {
				w.Restarts = 1 + 2*i
				w.LastExit = "crashed: signal 9 (SIGKILL)"
			})},
			evidence: map[string]float64{"restarts": 4, "max_worker_restarts": 3},
			message:  []string{"restarted 4 times (most: p-1, 3 times", `"crashed: signal 9 (SIGKILL)"`, "OOM killer"}},
		{name: "restarts of a failed pool", rule: "restarts-high", fires: true, severity: SeverityCritical,
			pool: PoolReport{Failed: true, Workers: workers(1, 1, 0, func(_ int, w *WorkerReport) {
				w.Restarts, w.LastExit = 11, "crashed: exit status 3"
			})},
			message: []string{"crashed: exit status 3"}},
		{name: "watchdog kills are not the OOM killer", rule: "restarts-high", fires: true, severity: SeverityWarn,
			pool: PoolReport{Workers: workers(1, 1, 0, func(_ int, w *WorkerReport) {
				w.Restarts, w.LastExit = 3, "killed by the runtime (SIGKILL): it failed 3 health checks"
			})}},
		{name: "few restarts", rule: "restarts-high",
			pool: PoolReport{Workers: workers(2, 1, 0, func(_ int, w *WorkerReport) { w.Restarts = 1 })}},

		// idle-capacity
		{name: "idle big pool", rule: "idle-capacity", fires: true, severity: SeverityInfo,
			pool:     PoolReport{Size: 8, Ready: 8, Workers: workers(8, 1, 0, nil)},
			evidence: map[string]float64{"utilisation": 0, "size": 8, "suggested_size": 4},
			message:  []string{"8 workers are 0% busy (0/8)", "PoolConfig.Size 4"}},
		{name: "idle but it queued before", rule: "idle-capacity",
			pool: PoolReport{Size: 8, Ready: 8, NoFreeCapacity: 1, Workers: workers(8, 1, 0, nil)}},
		{name: "idle small pool", rule: "idle-capacity",
			pool: PoolReport{Size: 3, Ready: 3, Workers: workers(3, 1, 0, nil)}},
		{name: "idle pool still starting", rule: "idle-capacity",
			pool: PoolReport{Size: 8, Ready: 6, Workers: workers(6, 1, 0, nil)}},
		{name: "busy big pool", rule: "idle-capacity",
			pool: PoolReport{Size: 4, Ready: 4, Workers: workers(4, 1, 1, nil)}},
	} {
		t.Run(tc.rule+"/"+tc.name, func(t *testing.T) {
			p := Complete(tc.pool, Thresholds{}, []Rule{})
			rec, ok := findRule(t, tc.rule).Check(p, DefaultThresholds())
			if ok != tc.fires {
				t.Fatalf("fired %v, want %v (%+v)", ok, tc.fires, rec)
			}
			if !ok {
				return
			}
			if rec.Severity != tc.severity {
				t.Errorf("severity %q, want %q", rec.Severity, tc.severity)
			}
			for k, v := range tc.evidence {
				if got, ok := rec.Evidence[k]; !ok || got != v {
					t.Errorf("evidence[%s] = %v (present %v), want %v; all: %v", k, got, ok, v, rec.Evidence)
				}
			}
			for _, m := range tc.message {
				if !strings.Contains(rec.Message, m) {
					t.Errorf("message lacks %q: %s", m, rec.Message)
				}
			}
		})
	}
}

func findRule(t *testing.T, id string) Rule {
	for _, r := range DefaultRules() {
		if r.ID == id {
			return r
		}
	}
	t.Fatalf("no rule %q", id)
	return Rule{}
}

func TestRuleIDsAreUniqueAndDocumented(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range DefaultRules() {
		if seen[r.ID] || r.Summary == "" || r.Check == nil {
			t.Errorf("rule %q: duplicate, or no summary or check", r.ID)
		}
		seen[r.ID] = true
	}
	want := []string{"cpu-bound-on-gil-threads", "queue-often-full", "frequent-memory-recycles", "restarts-high",
		"gil-enabled-free-threaded-build", "idle-capacity"}
	for _, id := range want {
		if !seen[id] {
			t.Errorf("rule %q missing", id)
		}
	}
}

func TestRecommendStampsRuleID(t *testing.T) {
	always := Rule{ID: "always", Summary: "fires", Check: func(PoolReport, Thresholds) (Recommendation, bool) {
		return Recommendation{Severity: SeverityInfo, Message: "m"}, true
	}}
	recs := Recommend(PoolReport{}, Thresholds{}, []Rule{always})
	if len(recs) != 1 || recs[0].Rule != "always" || recs[0].Evidence == nil {
		t.Errorf("got %+v", recs)
	}
	if recs := Recommend(PoolReport{}, Thresholds{}, []Rule{}); recs == nil || len(recs) != 0 {
		t.Errorf("no rules: got %#v, want an empty slice", recs)
	}
}

func TestThresholdsOverride(t *testing.T) {
	p := Complete(PoolReport{Size: 2, Ready: 2, Workers: workers(2, 1, 0, func(_ int, w *WorkerReport) { w.Restarts = 1 })},
		Thresholds{Restarts: 2}, nil)
	if len(p.Recommendations) != 1 || p.Recommendations[0].Rule != "restarts-high" {
		t.Errorf("Restarts: 2 should make restarts-high fire at 2 restarts: %+v", p.Recommendations)
	}
}
