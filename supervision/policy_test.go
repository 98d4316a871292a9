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
		d := s.Decide(st.child)
		if d.Restart != st.restart || d.Delay != st.delay {
			t.Fatalf("step %d (%s): got restart=%v delay=%s, want %v %s (reason %q)", i, st.child, d.Restart, d.Delay, st.restart, st.delay, d.Reason)
		}
		if !d.Restart && d.Reason == "" {
			t.Fatalf("step %d: giving up without a reason", i)
		}
	}
}

func TestWithDefaults(t *testing.T) {
	if got, want := (Policy{}).WithDefaults(), DefaultPolicy(); got != want {
		t.Fatalf("zero policy = %+v, want %+v", got, want)
	}
}
