package supervision

import (
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestRecycleCheck(t *testing.T) {
	start := time.Unix(1000, 0)
	p := RecyclePolicy{MaxAge: time.Hour, AgeJitter: 10 * time.Minute, MaxRequests: 100, RequestsJitter: 20,
		MaxMemory: 100 << 20, HardMemoryLimit: 200 << 20, MinLifetime: time.Minute}.WithDefaults(4)
	cases := []struct {
		name string
		f    WorkerFacts
		at   time.Duration // after start
		want RecycleReason // "" for none
	}{
		{"fresh", WorkerFacts{}, time.Second, ""},
		{"age below limit", WorkerFacts{}, 59 * time.Minute, ""},
		{"age at limit, spread 0", WorkerFacts{}, time.Hour, RecycleAge},
		{"age spread pushes limit", WorkerFacts{Spread: 0.5}, time.Hour + 4*time.Minute, ""},
		{"age past spread limit", WorkerFacts{Spread: 0.5}, time.Hour + 5*time.Minute, RecycleAge},
		{"requests below", WorkerFacts{Requests: 99}, 2 * time.Minute, ""},
		{"requests at limit", WorkerFacts{Requests: 100}, 2 * time.Minute, RecycleRequests},
		{"requests spread", WorkerFacts{Requests: 109, Spread: 0.5}, 2 * time.Minute, ""},
		{"requests past spread", WorkerFacts{Requests: 110, Spread: 0.5}, 2 * time.Minute, RecycleRequests},
		{"memory", WorkerFacts{RSS: 101 << 20}, 2 * time.Minute, RecycleMemory},
		{"memory at limit is fine", WorkerFacts{RSS: 100 << 20}, 2 * time.Minute, ""},
		{"memory beats requests", WorkerFacts{RSS: 150 << 20, Requests: 500}, 2 * time.Minute, RecycleMemory},
		{"hard limit", WorkerFacts{RSS: 201 << 20}, 2 * time.Minute, RecycleMemoryHardLimit},
		{"young: no soft recycle", WorkerFacts{RSS: 150 << 20, Requests: 500}, 30 * time.Second, ""},
		{"young: hard limit still kills", WorkerFacts{RSS: 300 << 20}, time.Second, RecycleMemoryHardLimit},
	}
	for _, c := range cases {
		c.f.Started = start
		v, ok := p.Check(c.f, start.Add(c.at))
		if ok != (c.want != "") || v.Reason != c.want {
			t.Errorf("%s: got (%q, %v), want %q", c.name, v.Reason, ok, c.want)
		}
		if ok && v.Detail == "" {
			t.Errorf("%s: a verdict without its numbers", c.name)
		}
	}
}

func TestRecycleOffUnlessSet(t *testing.T) {
	p := RecyclePolicy{}.WithDefaults(4)
	if p.Enabled() || p.SamplesMemory() {
		t.Fatal("the zero policy must be off")
	}
	f := WorkerFacts{Started: time.Unix(0, 0), Requests: 1 << 40, RSS: 1 << 40}
	if v, ok := p.Check(f, time.Unix(1<<40, 0)); ok {
		t.Fatalf("zero policy recycled: %+v", v)
	}
	if p.CheckInterval != DefaultCheckInterval || p.DrainTimeout != DefaultDrainTimeout || p.MaxConcurrent != 1 {
		t.Fatalf("defaults not applied: %+v", p)
	}
}

func TestRecycleJitterDefaults(t *testing.T) {
	p := RecyclePolicy{MaxAge: time.Hour, MaxRequests: 25}.WithDefaults(4)
	if p.AgeJitter != 6*time.Minute {
		t.Errorf("AgeJitter = %s, want MaxAge/10", p.AgeJitter)
	}
	if p.RequestsJitter != 4 {
		t.Errorf("RequestsJitter = %d, want Size (4) since MaxRequests/10 is smaller", p.RequestsJitter)
	}
	if q := (RecyclePolicy{MaxRequests: 1000}).WithDefaults(4); q.RequestsJitter != 100 {
		t.Errorf("RequestsJitter = %d, want MaxRequests/10", q.RequestsJitter)
	}
}

// TestSpreadGuaranteesDistinctLimits: whatever the random draws, the limits
// of a pool's workers are pairwise at least Jitter/(2·Size) apart, and with
// the default request jitter no two workers share a request limit.
func TestSpreadGuaranteesDistinctLimits(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1, 2, 4, 7, 16, 64} {
		p := RecyclePolicy{MaxAge: time.Hour, MaxRequests: 25}.WithDefaults(size)
		for trial := 0; trial < 200; trial++ {
			ages := make([]time.Duration, size)
			reqs := map[int64]bool{}
			for slot := range size {
				s := Spread(slot, size, r.Float64())
				if s < 0 || s >= 1 {
					t.Fatalf("Spread out of [0,1): %v", s)
				}
				ages[slot] = p.AgeLimit(s)
				reqs[p.RequestLimit(s)] = true
			}
			sort.Slice(ages, func(i, j int) bool { return ages[i] < ages[j] })
			minGap := p.AgeJitter / time.Duration(2*size)
			for i := 1; i < size; i++ {
				if gap := ages[i] - ages[i-1]; gap < minGap-time.Microsecond {
					t.Fatalf("size %d: age limits %s apart, want ≥ %s", size, gap, minGap)
				}
			}
			if len(reqs) != size {
				t.Fatalf("size %d: %d distinct request limits, want %d", size, len(reqs), size)
			}
		}
	}
}

// TestAgeRecyclesAreStaggered simulates a pool that booted at one instant
// with an injected clock: its workers reach their age limits one by one.
func TestAgeRecyclesAreStaggered(t *testing.T) {
	const size = 4
	p := RecyclePolicy{MaxAge: time.Minute, AgeJitter: 20 * time.Second}.WithDefaults(size)
	start := time.Unix(0, 0)
	facts := make([]WorkerFacts, size)
	for i := range facts {
		facts[i] = WorkerFacts{Started: start, Spread: Spread(i, size, 0.99)}
	}
	var dueAt []time.Duration
	for tick := time.Duration(0); tick <= 2*time.Minute && len(dueAt) < size; tick += 100 * time.Millisecond {
		for i := range facts {
			if facts[i].Started.IsZero() {
				continue
			}
			if _, ok := p.Check(facts[i], start.Add(tick)); ok {
				dueAt = append(dueAt, tick)
				facts[i].Started = time.Time{}
			}
		}
	}
	if len(dueAt) != size {
		t.Fatalf("%d workers came due, want %d", len(dueAt), size)
	}
	for i := 1; i < size; i++ {
		if dueAt[i]-dueAt[i-1] < 2*time.Second {
			t.Fatalf("workers came due at %v: less than AgeJitter/(2·Size) apart", dueAt)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 150 << 20: "150.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestSettled(t *testing.T) {
	cases := []struct {
		python, before, after int
		want                  bool
	}{
		{0, 0, 0, true},  // the abandoned call ended, nothing else runs
		{1, 0, 0, false}, // it still runs
		{1, 1, 1, true},  // one live call runs; the abandoned one ended
		{2, 1, 1, false}, // both run
		{1, 0, 1, false}, // a call sent after the question: it cannot be counted
		{1, 1, 0, false}, // the live call ended meanwhile: be safe, ask again
		{0, 2, 1, true},
	}
	for _, c := range cases {
		if got := Settled(c.python, c.before, c.after); got != c.want {
			t.Errorf("Settled(%d, %d, %d) = %v, want %v", c.python, c.before, c.after, got, c.want)
		}
	}
	w := WatchdogPolicy{}.WithDefaults()
	if w.HangGrace != DefaultHangGrace || w.HealthInterval != DefaultHealthInterval || w.HealthTimeout != DefaultHealthTimeout || w.HealthFailures != DefaultHealthFailures {
		t.Fatalf("defaults: %+v", w)
	}
}
