package actors

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	"github.com/snakepit-go/snakepit/pyworker"
	"github.com/snakepit-go/snakepit/telemetry"
)

// Unit tests of the pool and worker actors on fake workers (harness_test.go):
// a real actor system, no Python, no waiting on time.

// Calls go to the least-loaded worker with a free slot; a worker never runs
// more than its capacity, and a call that finds none free waits its turn.
func TestRoutingLeastLoadedNeverOverCapacity(t *testing.T) {
	tp := startPool(t, func(s *PoolSettings) { s.Size, s.Worker.Spec.Capacity, s.QueueSize = 3, 2, 10 })
	steps := []struct {
		calls int
		want  map[string]int // loads once they are routed
	}{
		{1, map[string]int{"p-0": 1, "p-1": 0, "p-2": 0}},
		{2, map[string]int{"p-0": 1, "p-1": 1, "p-2": 1}},
		{3, map[string]int{"p-0": 2, "p-1": 2, "p-2": 2}},
	}
	var pending []*pendingCall
	for _, step := range steps {
		for range step.calls {
			pending = append(pending, tp.call(nil))
		}
		if got := loads(tp.status()); !equalLoads(got, step.want) {
			t.Fatalf("after %d calls: loads %v, want %v", len(pending), got, step.want)
		}
	}
	queued := tp.call(nil)
	if st := tp.status(); st.Queued != 1 || st.NoFreeCapacity != 1 {
		t.Fatalf("a 7th call with every slot taken: queued %d, no-free-capacity %d; want 1 and 1", st.Queued, st.NoFreeCapacity)
	}
	calls := map[string]*fakeCall{}
	for range 6 {
		c := tp.world.nextCall()
		calls[c.req.GetRequestId()] = c
	}
	freed := calls[pending[4].id] // on p-1
	freed.ok()
	pending[4].wantOK()
	if next := tp.world.nextCall(); next.req.GetRequestId() != queued.id || next.fw.id != freed.fw.id {
		t.Fatalf("the queued call went to %s (call %s), want %s: the only worker with a free slot", next.fw.id,
			next.req.GetRequestId(), freed.fw.id)
	} else {
		next.ok()
	}
	for id, c := range calls {
		if id != pending[4].id {
			c.ok()
		}
	}
	for _, id := range []string{"p-0", "p-1", "p-2"} {
		if most := tp.world.worker(t, id, 1).most.Load(); most > 2 {
			t.Errorf("worker %s ran %d calls at once, over its capacity 2", id, most)
		}
	}
}

func equalLoads(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// A call that finds every worker busy and the queue full is refused at once
// with SATURATED; the queued one still runs.
func TestQueueFullIsSaturated(t *testing.T) {
	tp := startPool(t, func(s *PoolSettings) { s.Size, s.QueueSize = 1, 1 })
	running, queued := tp.call(nil), tp.call(nil)
	refused := tp.call(nil)
	refused.wantFailure(apb.Failure_CODE_SATURATED, "PoolConfig.QueueSize")
	ev := waitEvent(tp, func(e telemetry.PoolSaturated) bool { return true })
	if ev.Queued != 1 || ev.Limit != 1 {
		t.Errorf("PoolSaturated: queued %d of %d, want 1 of 1", ev.Queued, ev.Limit)
	}
	if st := tp.status(); st.Saturated != 1 || st.Queued != 1 || st.LastSaturated.IsZero() {
		t.Errorf("status: saturated %d, queued %d, last saturated %v; want 1, 1, set", st.Saturated, st.Queued, st.LastSaturated)
	}
	tp.world.nextCall().ok()
	running.wantOK()
	tp.world.nextCall().ok()
	queued.wantOK()
}

// A queued call whose deadline passes (by the pool's clock) is answered
// DEADLINE when the queue next moves, and the calls behind it go on; a
// caller's cancel after the deadline is told as a queue timeout too.
func TestQueuedCallExpiresWithItsDeadline(t *testing.T) {
	for _, tc := range []struct {
		name   string
		expire func(tp *testPool, late *pendingCall)
		code   apb.Failure_Code
		text   string
	}{
		{"the queue moves", func(tp *testPool, _ *pendingCall) { tp.world.nextCall().ok() },
			apb.Failure_CODE_DEADLINE, "deadline exceeded while queued"},
		{"its caller cancels", func(tp *testPool, late *pendingCall) {
			tp.system.Root.Send(tp.pid, &apb.CancelCall{RequestId: late.id})
		}, apb.Failure_CODE_CANCELLED, "cancelled by the caller while queued"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := startPool(t, func(s *PoolSettings) { s.Size = 1 })
			first := tp.call(nil)
			deadline := tp.clock.Now().Add(time.Second).UnixNano()
			late := tp.call(func(r *apb.CallRequest) { r.Execute.DeadlineUnixNano = deadline })
			behind := tp.call(nil)
			tp.status() // all routed: one runs, two wait
			tp.clock.advance(2 * time.Second)
			tc.expire(tp, late)
			late.wantFailure(tc.code, tc.text)
			if ev := waitEvent[telemetry.QueueTimeout](tp, nil); ev.Waited != 2*time.Second {
				t.Errorf("QueueTimeout waited %s, want 2s (the pool's clock)", ev.Waited)
			}
			if tc.code == apb.Failure_CODE_CANCELLED {
				tp.world.nextCall().ok()
			}
			first.wantOK()
			if c := tp.world.nextCall(); c.req.GetRequestId() != behind.id {
				t.Fatalf("call %s ran, want %s: the one behind", c.req.GetRequestId(), behind.id)
			} else {
				c.ok()
			}
			behind.wantOK()
			if st := tp.status(); st.Queued != 0 || st.InFlight != 0 {
				t.Errorf("after: queued %d, in flight %d; want 0 and 0", st.Queued, st.InFlight)
			}
		})
	}
}

// A call that reached a worker incarnation unable to run it (its process
// died, or it is being killed, before it heard of the call) never reached
// Python: the pool routes it to another worker.
func TestCallThatNeverReachedPythonGoesToAnotherWorker(t *testing.T) {
	for _, tc := range []struct {
		name string
		// outOfService takes p-0's first incarnation out of service, and
		// returns the incarnation (gen) a late call would carry.
		outOfService func(t *testing.T, tp *testPool) uint64
	}{
		{"its process died", func(t *testing.T, tp *testPool) uint64 {
			tp.world.hold("p-0", 2) // its restart stays starting
			tp.world.worker(t, "p-0", 1).proc.die(pyworker.ExitStatus{Code: 1})
			for tp.world.nextLaunch() != (launchKey{"p-0", 2}) {
			}
			return 1
		}},
		{"it is being killed", func(t *testing.T, tp *testPool) uint64 {
			proc := tp.world.worker(t, "p-0", 1).proc
			proc.hold.Store(true) // dies only when the test says
			tp.system.Root.Send(tp.pidOf("p-0"), &killWorker{gen: 1, detail: "a test"})
			if sig := <-proc.signals; sig != syscall.SIGKILL {
				t.Fatalf("p-0 got %s, want SIGKILL", sig)
			}
			return 1
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := startPool(t, nil)
			gen := tc.outOfService(t, tp)
			box := NewReplyBox(tp.system)
			defer box.Release()
			req := tp.newRequest()
			// As the pool sends a call before it hears the worker is out.
			tp.system.Root.Send(tp.pidOf("p-0"), &dispatch{req: req, caller: box.PID(), gen: gen})
			c := tp.world.nextCall()
			if c.fw.id != "p-1" || c.req.GetRequestId() != req.GetExecute().GetRequestId() {
				t.Fatalf("call %s reached %s#%d, want p-1", c.req.GetRequestId(), c.fw.id, c.fw.n)
			}
			c.ok()
			if r := (<-box.C()).(*apb.CallReply); r.GetFailure() != nil || r.GetWorkerId() != "p-1" {
				t.Fatalf("reply %v from %q, want success from p-1", r.GetFailure(), r.GetWorkerId())
			}
			if n := tp.world.worker(t, "p-0", 1).executes.Load(); n != 0 {
				t.Errorf("p-0's first process received %d calls, want 0", n)
			}
		})
	}
}

// Regression: once a worker's connection broke, or it is being killed, the
// pool routes it no new call, while its process still lives.
func TestNoNewCallToAWorkerOnItsWayOut(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  func(t *testing.T, tp *testPool, p0 *fakeWorker)
	}{
		{"its connection broke", func(t *testing.T, tp *testPool, p0 *fakeWorker) {
			broken := tp.call(nil)
			c := tp.world.nextCall()
			if c.fw != p0 {
				t.Fatalf("the first call went to %s, want p-0", c.fw.id)
			}
			c.fail(errors.New("connection reset"))
			broken.wantFailure(apb.Failure_CODE_TRANSPORT, "connection reset")
		}},
		{"it is being killed", func(t *testing.T, tp *testPool, p0 *fakeWorker) {
			tp.system.Root.Send(tp.pidOf("p-0"), &killWorker{gen: 1, detail: "a test"})
			<-p0.proc.signals // the kill has begun: p-0 told the pool first
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := startPool(t, func(s *PoolSettings) { s.Worker.crashSettle = time.Millisecond })
			p0 := tp.world.worker(t, "p-0", 1)
			p0.proc.hold.Store(true) // a kill does not end it until the test says
			tp.world.hold("p-0", 2)  // nor does its restart come
			tc.out(t, tp, p0)
			first, second := tp.call(nil), tp.call(nil)
			if st := tp.status(); st.Queued != 1 || loads(st)["p-0"] != 0 || loads(st)["p-1"] != 1 {
				t.Fatalf("loads %v, queued %d: want the first call on p-1 and the second queued", loads(st), st.Queued)
			}
			c := tp.world.nextCall()
			if c.fw.id != "p-1" {
				t.Fatalf("a call reached %s#%d, want p-1", c.fw.id, c.fw.n)
			}
			c.ok()
			first.wantOK()
			if c := tp.world.nextCall(); c.fw.id != "p-1" {
				t.Fatalf("the queued call reached %s#%d, want p-1", c.fw.id, c.fw.n)
			} else {
				c.ok()
			}
			second.wantOK()
			if n := p0.executes.Load(); n > 1 {
				t.Errorf("p-0's process received %d calls, want at most the one before", n)
			}
		})
	}
}

// Regression: a retired worker's Terminated, which answers the Recycle,
// comes only once its process has exited.
func TestRecycleAnsweredOnlyOnceTheOldProcessIsGone(t *testing.T) {
	tp := startPool(t, func(s *PoolSettings) { s.Size = 1 })
	old := tp.world.worker(t, "p-0", 1)
	old.proc.hold.Store(true)
	done := tp.request(&RecycleWorker{ID: "p-0"})
	<-old.shutdown // its replacement is ready; it was asked to shut down
	tp.status()
	if len(done.ch) > 0 || old.proc.exited() {
		t.Fatal("the recycle was answered while the old process was still running")
	}
	old.proc.die(pyworker.ExitStatus{})
	if r := (<-done.C()).(*RecycleDone); r.Err != nil {
		t.Fatalf("recycle: %v", r.Err)
	}
	if !old.proc.exited() {
		t.Fatal("the recycle was answered before the old process exited")
	}
	if ev := waitEvent(tp, func(e telemetry.WorkerStopped) bool { return e.Worker == "p-0" }); ev.Reason != "recycled" {
		t.Errorf("p-0 stopped for %q, want recycled", ev.Reason)
	}
	st := tp.status()
	if len(st.Workers) != 1 || st.Workers[0].ID != "p-1" || !st.Workers[0].Ready || st.Recycles["manual"] != 1 {
		t.Errorf("after: workers %+v, recycles %v; want p-1 alone, ready, one manual recycle", st.Workers, st.Recycles)
	}
}

// A rolling restart starts each replacement before its worker retires, one
// at a time (MaxConcurrent 1); the retiring worker finishes its calls and
// takes no new one.
func TestRollingRestartReplacesFirstThenDrains(t *testing.T) {
	tp := startPool(t, nil)
	running := tp.call(nil)
	onP0 := tp.world.nextCall()
	releaseP2 := tp.world.hold("p-2", 1)
	done := tp.request(&RecycleAll{})
	if k := tp.world.nextLaunch(); k != (launchKey{"p-2", 1}) {
		t.Fatalf("first launch %v, want p-2", k)
	}
	st := tp.status()
	if st.Ready != 2 || st.Recycling != 2 || !st.Workers[2].Starting || st.Workers[0].Retiring {
		t.Fatalf("while the replacement starts: %+v; want p-0 and p-1 serving, p-2 starting, 2 recycling", st.Workers)
	}
	releaseP2()
	waitEvent(tp, func(e telemetry.WorkerReady) bool { return e.Worker == "p-2" })
	st = tp.status()
	if p0 := st.Workers[2]; p0.ID != "p-0" || !p0.Retiring || p0.Load != 1 {
		t.Fatalf("once p-2 is ready, p-0 is %+v; want retiring with its call still running", p0)
	}
	if n := tp.world.launchCount(); n != 3 {
		t.Fatalf("%d launches while p-0 drains, want 3: one recycle at a time", n)
	}
	other := tp.call(nil)
	if c := tp.world.nextCall(); c.fw.id == "p-0" {
		t.Fatal("a new call went to the retiring p-0")
	} else {
		c.ok()
	}
	other.wantOK()
	onP0.ok()
	running.wantOK()
	if r := (<-done.C()).(*RecycleDone); r.Err != nil {
		t.Fatalf("rolling restart: %v", r.Err)
	}
	st = tp.status()
	if ids := workerIDs(st); ids != "p-2 p-3" || st.Recycles["manual"] != 2 || st.Recycling != 0 {
		t.Errorf("after: workers %s, recycles %v, recycling %d; want p-2 p-3, 2 manual, 0", ids, st.Recycles, st.Recycling)
	}
}

// A rolling restart stops at its first replacement that cannot start: the
// workers keep serving the code that works, and the answer says why.
func TestRollingRestartHaltsAtAFailedReplacement(t *testing.T) {
	tp := startPool(t, func(s *PoolSettings) { s.Size = 3 })
	tp.world.failLaunch("p-3", 1, &pyworker.BootError{Worker: "p-3", Adapter: "new", Message: "ImportError: no module"})
	r := tp.ask(&RecycleAll{}).(*RecycleDone)
	for _, want := range []string{"the replacement for worker p-0 did not start", "ImportError",
		"worker p-1 not recycled: the rolling restart stopped", "worker p-2 not recycled"} {
		if r.Err == nil || !strings.Contains(r.Err.Error(), want) {
			t.Errorf("rolling restart answered %v; want it to say %q", r.Err, want)
		}
	}
	if !errors.Is(r.Err, pyworker.ErrBootFailed) {
		t.Errorf("the error does not match ErrBootFailed: %v", r.Err)
	}
	st := tp.status()
	if ids := workerIDs(st); ids != "p-0 p-1 p-2" || st.Ready != 3 || st.Recycling != 0 || len(st.Recycles) != 0 {
		t.Errorf("after: workers %s, ready %d, recycling %d, recycles %v; want the 3 first, ready, none", ids, st.Ready,
			st.Recycling, st.Recycles)
	}
	if n := tp.world.launchCount(); n != 4 {
		t.Errorf("%d launches, want 4: no replacement tried after the failed one", n)
	}
}

func workerIDs(st *PoolStatus) string {
	var ids []string
	for _, w := range st.Workers {
		ids = append(ids, w.ID)
	}
	return strings.Join(ids, " ")
}

// A session goes to the worker holding the fewest (ties: the least loaded),
// within MaxPerWorker and MaxSessions.
func TestSessionPlacement(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy SessionPolicy
		busyP0 bool     // a call runs on p-0 first
		want   []string // worker of each session, or the error's text
	}{
		{"fewest sessions first", SessionPolicy{}, false, []string{"p-0", "p-1", "p-0", "p-1"}},
		{"ties go to the least loaded", SessionPolicy{}, true, []string{"p-1", "p-0", "p-1"}},
		{"MaxPerWorker", SessionPolicy{MaxPerWorker: 1}, false, []string{"p-0", "p-1", "every worker of pool \"p\" holds 1 sessions"}},
		{"MaxSessions", SessionPolicy{MaxSessions: 2}, false, []string{"p-0", "p-1", "pool \"p\" holds 2 sessions"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := startPool(t, func(s *PoolSettings) { s.Sessions = tc.policy })
			if tc.busyP0 {
				tp.call(nil)
				defer func() { tp.world.nextCall().ok() }()
			}
			for i, want := range tc.want {
				r := tp.ask(&OpenSession{ID: "s" + string(rune('a'+i))}).(*SessionOpened)
				got := r.Worker
				if r.Err != nil {
					got = r.Err.Error()
					if !errors.Is(r.Err, ErrSessionLimit) {
						t.Errorf("session %d: %v does not match ErrSessionLimit", i, r.Err)
					}
				}
				if !strings.Contains(got, want) {
					t.Errorf("session %d: got %q, want %q", i, got, want)
				}
			}
		})
	}
}

// A session idle for its IdleTTL, by the pool's clock, is closed by the
// sweep: its worker runs the end hook and a later call finds it gone.
func TestIdleSessionExpiresByThePoolsClock(t *testing.T) {
	tp := startPool(t, func(s *PoolSettings) { s.Sessions = SessionPolicy{IdleTTL: time.Minute} })
	if r := tp.ask(&OpenSession{ID: "s"}).(*SessionOpened); r.Err != nil || r.Worker != "p-0" {
		t.Fatalf("open: %q, %v", r.Worker, r.Err)
	}
	tp.clock.advance(59 * time.Second)
	tp.system.Root.Send(tp.pid, &sessionSweep{})
	call := tp.call(func(r *apb.CallRequest) { r.SessionId = "s" })
	tp.world.nextCall().ok()
	call.wantOK() // not yet idle for a minute; the call made it used again
	tp.clock.advance(time.Minute)
	tp.system.Root.Send(tp.pid, &sessionSweep{})
	if ev := waitEvent[telemetry.SessionClosed](tp, nil); ev.Session != "s" || ev.Reason != "expired" {
		t.Fatalf("SessionClosed %+v, want s expired", ev)
	}
	if id := <-tp.world.worker(t, "p-0", 1).ended; id != "s" {
		t.Fatalf("the end hook ran for %q, want s", id)
	}
	tp.call(func(r *apb.CallRequest) { r.SessionId = "s" }).wantFailure(apb.Failure_CODE_SESSION_LOST, "closed or expired")
}

// The watchdog's hang grace is measured on the clock: a call Python still
// runs after its caller gave up kills the worker once the clock has moved
// HangGrace on, and the reason says for how long it ran.
func TestWatchdogHangGraceRunsOnTheClock(t *testing.T) {
	tp := startPool(t, func(s *PoolSettings) { s.Size = 1; s.Worker.Watchdog.HangGrace = 5 * time.Second })
	p0 := tp.world.worker(t, "p-0", 1)
	p0.pythonInFlight.Store(1) // Python does not stop it
	call := tp.call(nil)
	tp.world.nextCall() // never answered
	tp.system.Root.Send(tp.pid, &apb.CancelCall{RequestId: call.id})
	call.wantFailure(apb.Failure_CODE_CANCELLED, "cancelled by the caller")
	<-p0.stats // the watchdog has the call as abandoned, and asks Python
	tp.clock.advance(5 * time.Second)
	ev := waitEvent(tp, func(e telemetry.WorkerCrashed) bool { return e.Worker == "p-0" })
	if !strings.Contains(ev.KilledBy, "still running 5s after its caller gave up") {
		t.Errorf("killed by %q, want the 5s of the clock", ev.KilledBy)
	}
}
