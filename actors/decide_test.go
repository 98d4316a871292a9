package actors

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	wpb "github.com/snakepit-go/snakepit/pyworker/pb"
	"github.com/snakepit-go/snakepit/supervision"
)

// Table tests of the pool's pure decisions: no actor, no clock but the
// one given.

// member is a worker for a decision: "ready", "retiring", "starting" or
// "down", running load of capacity calls, holding sessions.
func member(id, state string, load, capacity, sessions int) *worker {
	wk := &worker{slot: &workerSlot{id: id}, gen: 1, ready: state != "down" && state != "starting", load: load,
		capacity: capacity, sessions: sessionLoad{bound: sessions}}
	switch state {
	case "retiring":
		wk.recycle.retiring = true
	case "starting":
		wk.recycle.replaces = &worker{slot: &workerSlot{id: "old"}}
	}
	return wk
}

func idOf(wk *worker) string {
	if wk == nil {
		return "none"
	}
	return wk.slot.id
}

func TestLeastLoadedFree(t *testing.T) {
	for _, tc := range []struct {
		name    string
		workers []*worker
		want    string
	}{
		{"the least loaded", []*worker{member("a", "ready", 2, 4, 0), member("b", "ready", 1, 4, 0), member("c", "ready", 3, 4, 0)}, "b"},
		{"ties: the first", []*worker{member("a", "ready", 1, 2, 0), member("b", "ready", 1, 2, 0)}, "a"},
		{"never over capacity", []*worker{member("a", "ready", 1, 1, 0), member("b", "ready", 3, 4, 0)}, "b"},
		{"not retiring, starting or down", []*worker{member("a", "retiring", 0, 1, 0), member("b", "starting", 0, 1, 0),
			member("c", "down", 0, 1, 0), member("d", "ready", 1, 2, 0)}, "d"},
		{"every worker full", []*worker{member("a", "ready", 1, 1, 0), member("b", "ready", 2, 2, 0)}, "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := roster{byID: map[string]*worker{}}
			r.list = tc.workers
			if got := idOf(r.leastLoadedFree()); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// queued is a call for the queue tests: "plain", "session", or with
// "expired" its deadline passed.
func queued(id, kind string, now time.Time) *dispatch {
	d := &dispatch{req: &apb.CallRequest{Execute: &wpb.ExecuteRequest{RequestId: id}}}
	if strings.Contains(kind, "session") {
		d.sess = &session{id: "s-" + id}
	}
	if strings.Contains(kind, "expired") {
		d.req.Execute.DeadlineUnixNano = now.Add(-time.Second).UnixNano()
	}
	return d
}

// The queue's order: FIFO for plain calls; a session call that cannot go
// holds up no other call; a call past its deadline goes whatever the rest.
func TestCallQueueDrain(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		name    string
		queue   []string        // "id:kind"
		takes   map[string]bool // which calls a worker would take
		taken   string
		expired string
		left    string
	}{
		{"FIFO stops at the first refused", []string{"a:plain", "b:plain", "c:plain"}, map[string]bool{"a": true, "c": true},
			"a", "", "b c"},
		{"expired calls go first", []string{"a:plain expired", "b:plain", "c:plain expired"}, map[string]bool{"b": true},
			"b", "a c", ""},
		{"past a blocked head, FIFO expires nothing", []string{"a:plain", "b:plain expired"}, nil, "", "", "a b"},
		{"a waiting session call holds nobody up", []string{"a:session", "b:plain", "c:session"},
			map[string]bool{"b": true, "c": true}, "b c", "", "a"},
		{"a refused plain call holds up the plain calls behind it", []string{"a:session", "b:plain", "c:plain", "d:session"},
			map[string]bool{"c": true, "d": true}, "d", "", "a b c"},
		{"with session calls, expired calls anywhere go", []string{"a:session", "b:plain", "c:plain expired"}, nil,
			"", "c", "a b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newCallQueue(10)
			for _, spec := range tc.queue {
				id, kind, _ := strings.Cut(spec, ":")
				q.push(queued(id, kind, now), now)
			}
			var taken, expired []string
			q.drain(now, func(d *dispatch) bool {
				if tc.takes[d.id()] {
					taken = append(taken, d.id())
				}
				return tc.takes[d.id()]
			}, func(d *dispatch) { expired = append(expired, d.id()) })
			var left []string
			sessions := 0
			for _, d := range q.waiting {
				left = append(left, d.id())
				if d.sess != nil {
					sessions++
				}
			}
			got := fmt.Sprintf("taken %q, expired %q, left %q", strings.Join(taken, " "), strings.Join(expired, " "), strings.Join(left, " "))
			want := fmt.Sprintf("taken %q, expired %q, left %q", tc.taken, tc.expired, tc.left)
			if got != want {
				t.Errorf("%s\nwant %s", got, want)
			}
			if q.sessionWaiting != sessions {
				t.Errorf("sessionWaiting %d, but %d session calls are left", q.sessionWaiting, sessions)
			}
		})
	}
}

func TestCallQueueBoundAndRemove(t *testing.T) {
	now := time.Unix(1000, 0)
	q := newCallQueue(2)
	q.push(queued("a", "plain", now), now)
	q.push(queued("b", "session", now), now)
	if !q.full() || q.noCapacity != 2 || q.sessionWaiting != 1 {
		t.Fatalf("full %v, no-capacity %d, session calls %d; want true, 2, 1", q.full(), q.noCapacity, q.sessionWaiting)
	}
	if d := q.remove("b"); d == nil || q.sessionWaiting != 0 || q.full() {
		t.Fatalf("remove b: %v, session calls %d, full %v", d, q.sessionWaiting, q.full())
	}
	if q.remove("zz") != nil {
		t.Fatal("removing an unknown call found one")
	}
	q.pushFront(queued("c", "plain", now))
	if q.waiting[0].id() != "c" || q.waiting[0].queuedAt != (time.Time{}) {
		t.Fatalf("pushFront: head %s", q.waiting[0].id())
	}
}

// recycleOf is a recycle of a new worker id, for the groups given.
func recycleOf(id string, groups ...*recycleGroup) *recycleJob {
	j := &recycleJob{target: member(id, "ready", 0, 1, 0), groups: groups}
	for _, g := range groups {
		g.left++
	}
	return j
}

func pendingIDs(r *recycler) string {
	var ids []string
	for _, j := range r.pending {
		ids = append(ids, j.target.slot.id)
	}
	return strings.Join(ids, " ")
}

func TestRecyclerStartsAtMostMaxConcurrent(t *testing.T) {
	for _, tc := range []struct {
		maxConcurrent, underWay int
		want                    string
	}{{1, 0, "a"}, {1, 1, "none"}, {2, 1, "a"}, {2, 2, "none"}} {
		r := newRecycler(supervision.RecyclePolicy{MaxConcurrent: tc.maxConcurrent})
		r.underWay = tc.underWay
		r.pending = []*recycleJob{recycleOf("a"), recycleOf("b")}
		got := "none"
		if j := r.next(); j != nil {
			got = j.target.slot.id
		}
		if got != tc.want {
			t.Errorf("MaxConcurrent %d with %d under way: next %s, want %s", tc.maxConcurrent, tc.underWay, got, tc.want)
		}
	}
}

func TestRecyclerAddJoinsTheJobOfAWorker(t *testing.T) {
	r := newRecycler(supervision.RecyclePolicy{MaxConcurrent: 1})
	a := member("a", "ready", 0, 1, 0)
	g1, g2 := &recycleGroup{left: 1}, &recycleGroup{left: 1}
	if !r.add(a, supervision.Verdict{Reason: supervision.RecycleAge}, nil) {
		t.Fatal("the first recycle of a is not new")
	}
	if r.add(a, supervision.Verdict{Reason: supervision.RecycleManual}, g1) {
		t.Fatal("a second recycle of a queued made a new job")
	}
	j := r.next()
	a.recycle.job = j
	if r.add(a, supervision.Verdict{Reason: supervision.RecycleManual}, g2) || len(j.groups) != 2 || j.verdict.Reason != supervision.RecycleAge {
		t.Fatalf("a recycle of a under way: groups %d, reason %s; want both groups on the first job", len(j.groups), j.verdict.Reason)
	}
}

// A failed replacement halts the rollouts it belongs to, and only them.
func TestRecyclerHaltDropsOnlyTheFailedRollouts(t *testing.T) {
	rollout, other := &recycleGroup{}, &recycleGroup{}
	failed := recycleOf("a", rollout)
	for _, tc := range []struct {
		name    string
		pending []*recycleJob
		halted  string
		left    string
	}{
		{"the rest of its rollout", []*recycleJob{recycleOf("b", rollout), recycleOf("c", rollout)}, "b c", ""},
		{"not another request's", []*recycleJob{recycleOf("b", rollout), recycleOf("c", other), recycleOf("d")}, "b", "c d"},
		{"one shared with another request", []*recycleJob{recycleOf("b", other, rollout)}, "b", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRecycler(supervision.RecyclePolicy{})
			r.pending = tc.pending
			var halted []string
			for _, j := range r.halt(failed) {
				halted = append(halted, j.target.slot.id)
			}
			if got := strings.Join(halted, " "); got != tc.halted || pendingIDs(&r) != tc.left {
				t.Errorf("halted %q, left %q; want %q and %q", got, pendingIDs(&r), tc.halted, tc.left)
			}
		})
	}
	r := newRecycler(supervision.RecyclePolicy{})
	r.pending = []*recycleJob{recycleOf("b")}
	if h := r.halt(recycleOf("a")); len(h) != 0 || len(r.pending) != 1 {
		t.Error("a scheduled recycle (no request) that failed halted others")
	}
}

// A request is answered once all its jobs are done, with their errors.
func TestRecycleJobFinishCompletesGroups(t *testing.T) {
	all, one := &recycleGroup{}, &recycleGroup{}
	a, b := recycleOf("a", all, one), recycleOf("b", all)
	if done := a.finish(errors.New("a failed")); len(done) != 1 || done[0] != one {
		t.Fatalf("after a: %d groups complete, want the one of a alone", len(done))
	}
	if len(a.groups) != 0 {
		t.Fatal("a finished job keeps its groups")
	}
	done := b.finish(nil)
	if len(done) != 1 || done[0] != all || len(all.errs) != 1 || all.errs[0].Error() != "a failed" {
		t.Fatalf("after b: %d complete, errors %v; want the rolling request, with a's error", len(done), all.errs)
	}
}

func TestSessionPlace(t *testing.T) {
	for _, tc := range []struct {
		name    string
		max     int
		workers []*worker
		want    string
		ready   int
	}{
		{"the fewest sessions", 0, []*worker{member("a", "ready", 0, 1, 2), member("b", "ready", 1, 1, 1)}, "b", 2},
		{"ties: the least loaded", 0, []*worker{member("a", "ready", 1, 2, 1), member("b", "ready", 0, 2, 1)}, "b", 2},
		{"ties on both: the first", 0, []*worker{member("a", "ready", 0, 1, 1), member("b", "ready", 0, 1, 1)}, "a", 2},
		{"MaxPerWorker", 2, []*worker{member("a", "ready", 0, 1, 2), member("b", "ready", 0, 1, 5)}, "none", 2},
		{"members only", 0, []*worker{member("a", "retiring", 0, 1, 0), member("b", "starting", 0, 1, 0), member("c", "ready", 0, 1, 3)}, "c", 1},
		{"nobody ready", 0, []*worker{member("a", "down", 0, 1, 0)}, "none", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newSessionTable(SessionPolicy{MaxPerWorker: tc.max})
			best, ready := st.place(tc.workers)
			if idOf(best) != tc.want || ready != tc.ready {
				t.Errorf("got %s of %d ready, want %s of %d", idOf(best), ready, tc.want, tc.ready)
			}
		})
	}
}

func TestSessionExpiry(t *testing.T) {
	now := time.Unix(10_000, 0)
	st := newSessionTable(SessionPolicy{IdleTTL: time.Minute})
	for _, s := range []*session{
		{id: "fresh", lastUsed: now.Add(-59 * time.Second)},
		{id: "idle", lastUsed: now.Add(-time.Minute)},
		{id: "busy", lastUsed: now.Add(-time.Hour), active: 1},
		{id: "lost", lastUsed: now.Add(-time.Hour), lost: "gone", active: 1},
		{id: "lost-idle", lastUsed: now.Add(-time.Hour), lost: "gone"},
	} {
		st.open[s.id] = s
	}
	idle, forget := st.expired(now)
	if got := sessionIDs(idle); got != "idle lost-idle" {
		t.Errorf("to close: %s, want idle lost-idle", got)
	}
	if got := sessionIDs(forget); got != "lost" {
		t.Errorf("to forget: %s, want lost", got)
	}
}

func sessionIDs(ss []*session) string {
	var ids []string
	for _, s := range ss {
		ids = append(ids, s.id)
	}
	slices.Sort(ids) // the table is a map
	return strings.Join(ids, " ")
}

func TestWatchdogOverdueByItsClock(t *testing.T) {
	clock := newFakeClock()
	d := newWatchdog(&WorkerSettings{Watchdog: supervision.WatchdogPolicy{HangGrace: 5 * time.Second, HealthFailures: 2}, Clock: clock})
	d.abandon("c1", "slow")
	clock.advance(4 * time.Second)
	if why := d.overdue(); why != "" {
		t.Fatalf("4s into a 5s grace: %q", why)
	}
	clock.advance(time.Second)
	if why := d.overdue(); !strings.Contains(why, `call c1 of tool "slow" was still running 5s`) {
		t.Fatalf("at the grace: %q", why)
	}
	if d.healthFailed() || !d.healthFailed() {
		t.Fatal("HealthFailures 2: the second failure in a row, not the first, is one too many")
	}
}
