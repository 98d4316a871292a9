package supervision

import (
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

func TestBackoffDoublesAndCaps(t *testing.T) {
	s := New(Policy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, Jitter: 0.2}, nil, func() float64 { return 0.5 })
	cases := []struct {
		n    int
		want time.Duration
	}{{0, 100 * time.Millisecond}, {1, 200 * time.Millisecond}, {2, 400 * time.Millisecond}, {3, 800 * time.Millisecond}, {4, time.Second}, {30, time.Second}}
	for _, c := range cases {
		if got := s.Backoff(c.n); got != c.want {
			t.Errorf("Backoff(%d) = %s, want %s", c.n, got, c.want)
		}
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	for _, r := range []struct {
		rand float64
		want time.Duration
	}{{0, 80 * time.Millisecond}, {0.999999999, 120 * time.Millisecond}} {
		s := New(Policy{InitialBackoff: 100 * time.Millisecond, Jitter: 0.2}, nil, func() float64 { return r.rand })
		got := s.Backoff(0)
		if d := got - r.want; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("rand %v: Backoff(0) = %s, want %s", r.rand, got, r.want)
		}
	}
}

func TestDecideIntensity(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	s := New(Policy{MaxRestarts: 3, Period: 10 * time.Second, Jitter: 0.0001}, clock, func() float64 { return 0.5 })
	steps := []struct {
		advance time.Duration
		child   string
		restart bool
		delay   time.Duration
	}{
		{0, "a", true, 100 * time.Millisecond},
		{time.Second, "a", true, 200 * time.Millisecond},
		{time.Second, "b", true, 100 * time.Millisecond},     // backoff is per child
		{time.Second, "c", false, 0},                         // 4th within 10s: give up
		{9 * time.Second, "c", true, 100 * time.Millisecond}, // the first two aged out
	}
	for i, st := range steps {
		clock.t = clock.t.Add(st.advance)
		d := s.Decide(st.child, Exit{Kind: ExitCrashed, Signal: 9, Code: -1})
		if d.Restart != st.restart || d.Delay != st.delay {
			t.Fatalf("step %d (%s): got restart=%v delay=%s, want %v %s (reason %q)", i, st.child, d.Restart, d.Delay, st.restart, st.delay, d.Reason)
		}
		if !d.Restart && (d.Reason == "" || !d.Escalate) {
			t.Fatalf("step %d: giving up without a reason", i)
		}
	}
}

func TestRestartTypes(t *testing.T) {
	exits := map[string]Exit{
		"crash code 3":    {Kind: ExitCrashed, Code: 3},
		"crash SIGSEGV":   {Kind: ExitCrashed, Code: -1, Signal: 11},
		"clean exit 0":    {Kind: ExitCrashed, Code: 0},
		"killed for hang": {Kind: ExitKilled, Code: -1, Signal: 9, Why: "hang"},
		"boot failed":     {Kind: ExitBootFailed, Why: "ImportError"},
	}
	want := map[RestartType]map[string]bool{
		Permanent: {"crash code 3": true, "crash SIGSEGV": true, "clean exit 0": true, "killed for hang": true, "boot failed": true},
		Transient: {"crash code 3": true, "crash SIGSEGV": true, "clean exit 0": false, "killed for hang": true, "boot failed": true},
		Temporary: {},
	}
	for typ, restarts := range want {
		for name, exit := range exits {
			s := New(Policy{Type: typ}, &fakeClock{t: time.Unix(0, 0)}, func() float64 { return 0.5 })
			d := s.Decide("w", exit)
			if d.Restart != restarts[name] {
				t.Errorf("%s worker after %s: restart=%v, want %v", typ, name, d.Restart, restarts[name])
			}
			if !d.Restart && (d.Escalate || d.Reason == "") {
				t.Errorf("%s worker after %s: letting one worker go must not escalate and must say why: %+v", typ, name, d)
			}
		}
	}
}

func TestExitStrings(t *testing.T) {
	cases := map[string]Exit{
		"crashed: exit code 3":                             {Kind: ExitCrashed, Code: 3},
		"crashed: signal 11 (SIGSEGV)":                     {Kind: ExitCrashed, Code: -1, Signal: 11},
		"killed by the runtime (signal 9 (SIGKILL)): hang": {Kind: ExitKilled, Code: -1, Signal: 9, Why: "hang"},
		"recycled: requests":                               {Kind: ExitRecycled, Why: "requests"},
		"stopped":                                          {Kind: ExitStopped},
	}
	for want, e := range cases {
		if got := e.String(); got != want {
			t.Errorf("%#v: %q, want %q", e, got, want)
		}
	}
	if (RestartType("forever")).Valid() || !(RestartType("")).Valid() {
		t.Error("RestartType.Valid")
	}
}

func TestWithDefaults(t *testing.T) {
	if got, want := (Policy{}).WithDefaults(), DefaultPolicy(); got != want {
		t.Fatalf("zero policy = %+v, want %+v", got, want)
	}
}
