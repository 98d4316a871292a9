package actors

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hashicorp/go-hclog"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	"github.com/snakepit-go/snakepit/supervision"
	"github.com/snakepit-go/snakepit/telemetry"
)

// PoolSettings configure one pool actor.
type PoolSettings struct {
	Name      string
	Profile   string // the concrete profile its workers run, for reports
	Size      int
	QueueSize int
	Worker    WorkerSettings
	Restart   supervision.Policy
	Recycle   supervision.RecyclePolicy
	Sessions  SessionPolicy     // defaults applied here
	Clock     supervision.Clock // nil: the system clock
	Logger    hclog.Logger
	Events    *telemetry.Bus // nil: no events
	// AutoFallback: the profile was chosen by "auto"; if a thread-profile
	// worker reports its free-threaded GIL switched on, the pool moves to
	// the process profile (a rolling replacement of its workers).
	AutoFallback bool
}

// worker is the pool's view of one worker.
type worker struct {
	pid      *actor.PID
	slot     *workerSlot
	gen      uint64 // incarnation currently ready (0: none)
	ready    bool
	capacity int
	load     int
	osPid    int
	restarts int
	// atCapacity counts the dispatches that filled the worker to capacity.
	atCapacity int64

	// Lifecycle: its place in the pool (for the jitter spread), when its
	// current process became ready, the calls it served, its last RSS.
	index    int
	spread   float64
	started  time.Time
	requests int64
	rss      uint64
	// busy sums the time with at least one call running, since busySince
	// when it has one now; bootCPU is the CPU its process used to start.
	busy      time.Duration
	busySince time.Time
	bootCPU   time.Duration
	// Recycling: a replacement points at the worker it replaces until it is
	// ready; then the old one is retiring (no new calls) until it stops.
	replaces  *worker
	retiring  bool
	successor string
	stopSent  bool
	job       *recycleJob          // the recycle replacing this worker
	killedFor *supervision.Verdict // killed at once for this (hard memory limit)
	startErr  error                // why a replacement did not start
	letGo     bool                 // its restart type says it is not restarted
	// The last restart's backoff and the pool's restarts within the period.
	backoff          time.Duration
	restartsInPeriod int
	lastExit         string // how its last process ended
	// sessions counts the sessions bound to it; ending, the session end
	// hooks it is running (it does not stop before they are done).
	sessions, ending int
}

// busyNow is the time w's process has had a call running, up to now.
func (w *worker) busyNow() time.Duration {
	if w.load > 0 && w.ready {
		return w.busy + time.Since(w.busySince)
	}
	return w.busy
}

func (w *worker) free() bool { return w.ready && !w.retiring && w.load < w.capacity }

// poolActor routes calls to the least-loaded worker with free capacity,
// queues them (bounded) when every worker is full, and supervises its
// workers: it is their parent and implements actor.SupervisorStrategy.
type poolActor struct {
	s        PoolSettings
	sup      *supervision.Supervisor
	workers  []*worker
	byID     map[string]*worker // by actor PID id
	queue    []*dispatch
	inflight map[string]*worker // request id -> worker running it
	waiters  []*actor.PID       // AwaitReady callers
	drainers []*actor.PID
	draining bool
	// noCapacity counts calls that found no worker with free capacity and
	// waited in the queue; saturated counts calls refused with the queue full.
	noCapacity, saturated int64
	failed                string // non-empty once the pool gave up: why
	failErr               error
	timers                map[string]*time.Timer // pending restarts and drains by worker PID id
	stopping              bool

	policy    supervision.RecyclePolicy
	pending   []*recycleJob // recycles waiting for a turn
	recycling int           // graceful recycles under way
	recycles  map[supervision.RecycleReason]int64
	nextID    int
	random    func() float64
	// served and restarts count since the start, workers since gone included.
	served   int64
	restarts int
	// lastSaturated is when a call was last refused with the queue full.
	lastSaturated time.Time
	// workerSettings are what new workers start with; replaced (never
	// changed in place: workers read theirs) when the profile changes.
	workerSettings *WorkerSettings

	sessionPolicy SessionPolicy
	sessions      map[string]*session
	sessionCalls  map[string]*session // request id -> session, for session calls queued or running
	sessionQueued int                 // session calls in the queue
	sessionSweep  chan struct{}       // stops the idle-session sweep
}

// NewPoolProps returns the props of a pool actor.
func NewPoolProps(s PoolSettings) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		if s.Clock == nil {
			s.Clock = supervision.SystemClock{}
		}
		s.Worker.Pool, s.Worker.Events = s.Name, s.Events
		return &poolActor{s: s, sup: supervision.New(s.Restart, s.Clock, nil), byID: map[string]*worker{},
			inflight: map[string]*worker{}, timers: map[string]*time.Timer{},
			policy: s.Recycle.WithDefaults(s.Size), recycles: map[supervision.RecycleReason]int64{}, random: rand.Float64,
			workerSettings: &s.Worker, sessionPolicy: s.Sessions.WithDefaults(), sessions: map[string]*session{},
			sessionCalls: map[string]*session{}}
	}, actor.WithDispatcher(inlineDispatcher))
}

func (p *poolActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		p.spawnWorkers(ctx)
		if p.policy.Enabled() {
			ctx.Spawn(newLifecycleProps(p.policy, p.s.Clock, p.s.Logger.Named("lifecycle")))
		}
		p.sessionSweep = tickSelf(ctx, p.sessionPolicy.sweepEvery(), &sessionSweep{})
	case *apb.CallRequest:
		p.onCall(ctx, &dispatch{req: m, caller: ctx.Sender()})
	case *apb.CancelCall:
		p.onCancel(ctx, m)
	case *workerReady:
		p.onReady(ctx, m)
	case *workerDown:
		p.onDown(ctx, m)
	case *slotFreed:
		p.onFreed(ctx, m)
	case *requeue:
		p.onRequeue(ctx, m.d)
	case *poolFailed:
		p.fail(ctx, m.err)
	case *AwaitReady:
		p.waiters = append(p.waiters, ctx.Sender())
		p.answerWaiters(ctx)
	case *Drain:
		p.draining = true
		p.abandonRecycles(ctx, fmt.Errorf("%w: pool %q is stopping", ErrPoolUnavailable, p.s.Name))
		p.drainers = append(p.drainers, ctx.Sender())
		p.answerDrainers(ctx)
	case *StatusRequest:
		ctx.Respond(p.status())
	case *DescribeQuery:
		p.forwardDescribe(ctx)
	case *restartDue:
		p.onRestartDue(ctx, m)
	case *RecycleWorker:
		p.onRecycleWorker(ctx, m)
	case *RecycleAll:
		p.onRecycleAll(ctx)
	case *lifecycleQuery:
		p.onLifecycleQuery(ctx)
	case *lifecycleReport:
		p.onLifecycleReport(ctx, m)
	case *drainTimedOut:
		p.onDrainTimedOut(ctx, m)
	case *gilSwitchedOn:
		p.onGILSwitchedOn(ctx, m)
	case *OpenSession:
		p.onOpenSession(ctx, m)
	case *CloseSession:
		p.onCloseSession(ctx, m)
	case *sessionEnded:
		p.onSessionEnded(ctx, m)
	case *sessionSweep:
		if len(p.sessions) > 0 {
			p.onSessionSweep(ctx)
		}
	case *sessionDrainOver:
		p.onSessionDrainOver(ctx, m)
	case *actor.Terminated:
		p.onTerminated(ctx, m.Who)
	case *actor.Stopping:
		p.abandonRecycles(ctx, fmt.Errorf("%w: pool %q is stopping", ErrPoolUnavailable, p.s.Name))
		p.stopping = true
		for _, t := range p.timers {
			t.Stop()
		}
		if p.sessionSweep != nil {
			close(p.sessionSweep)
			p.sessionSweep = nil
		}
	}
}

func (p *poolActor) spawnWorkers(ctx actor.Context) {
	for i := 0; i < p.s.Size; i++ {
		p.spawnWorker(ctx, i)
	}
}

// spawnWorker starts a worker for place index of the pool, with an id never
// used before in the pool ("<pool>-<n>").
func (p *poolActor) spawnWorker(ctx actor.Context, index int) *worker {
	id := p.s.Name + "-" + strconv.Itoa(p.nextID)
	p.nextID++
	slot := &workerSlot{id: id, settings: p.workerSettings, log: p.s.Logger.Named(id)}
	pid := ctx.Spawn(newWorkerProps(slot))
	w := &worker{pid: pid, slot: slot, capacity: 1, index: index, spread: supervision.Spread(index, p.s.Size, p.random())}
	p.workers = append(p.workers, w)
	p.byID[pid.Id] = w
	return w
}

func (p *poolActor) now() time.Time { return p.s.Clock.Now() }

func (p *poolActor) onCall(ctx actor.Context, d *dispatch) {
	switch {
	case p.failed != "":
		p.reject(ctx, d, apb.Failure_CODE_POOL_UNAVAILABLE, fmt.Sprintf("pool %q has failed: %s", p.s.Name, p.failed))
	case p.draining:
		p.reject(ctx, d, apb.Failure_CODE_POOL_UNAVAILABLE, fmt.Sprintf("pool %q is stopping", p.s.Name))
	case d.req.GetSessionId() != "":
		p.onSessionCall(ctx, d, d.req.GetSessionId())
	case len(p.queue) == 0 && p.tryDispatch(ctx, d):
	case len(p.queue) >= p.s.QueueSize:
		p.saturate(ctx, d)
	default:
		if why, stuck := p.wouldDeadlock(d); stuck {
			p.reject(ctx, d, apb.Failure_CODE_DEADLOCK, why)
			return
		}
		p.noCapacity++
		d.queuedAt = time.Now()
		p.queue = append(p.queue, d)
	}
}

// saturate refuses d: the queue is full.
func (p *poolActor) saturate(ctx actor.Context, d *dispatch) {
	p.saturated++
	p.lastSaturated = time.Now()
	publish(p.s.Events, telemetry.PoolSaturated{Time: time.Now(), Pool: p.s.Name, Tool: d.req.GetExecute().GetTool(),
		Queued: len(p.queue), Limit: p.s.QueueSize})
	p.reject(ctx, d, apb.Failure_CODE_SATURATED, fmt.Sprintf(
		"pool %q is saturated: all %d workers busy and %d calls queued (PoolConfig.QueueSize)", p.s.Name, p.s.Size, len(p.queue)))
}

// tryDispatch sends d to the least-loaded worker with free capacity.
func (p *poolActor) tryDispatch(ctx actor.Context, d *dispatch) bool {
	best := p.leastLoadedFree()
	if best == nil {
		return false
	}
	p.assign(ctx, d, best)
	return true
}

// leastLoadedFree is the member worker with the most free capacity, or nil.
func (p *poolActor) leastLoadedFree() *worker {
	var best *worker
	for _, w := range p.workers {
		if w.free() && (best == nil || w.load < best.load) {
			best = w
		}
	}
	return best
}

// assign sends d to best and counts it running there.
func (p *poolActor) assign(ctx actor.Context, d *dispatch, best *worker) {
	if best.load == 0 {
		best.busySince = time.Now()
	}
	best.load++
	if best.load == best.capacity {
		best.atCapacity++
		if listening(p.s.Events) {
			p.s.Events.Publish(telemetry.CapacityReached{Time: time.Now(), Pool: p.s.Name, Worker: best.slot.id,
				Capacity: best.capacity, Load: best.load})
		}
	}
	d.gen = best.gen
	p.inflight[d.req.GetExecute().GetRequestId()] = best
	if d.sess != nil {
		p.sessionCalls[d.req.GetExecute().GetRequestId()] = d.sess
	}
	ctx.Send(best.pid, d)
}

// pump moves queued calls to free workers, dropping those past their deadline.
func (p *poolActor) pump(ctx actor.Context) {
	if p.sessionQueued > 0 {
		p.pumpSessions(ctx)
		return
	}
	var now time.Time // read only when something is queued
	for len(p.queue) > 0 {
		d := p.queue[0]
		if now.IsZero() {
			now = time.Now()
		}
		if d.deadlinePassed(now) {
			p.queue = p.queue[1:]
			p.reject(ctx, d, apb.Failure_CODE_DEADLINE, "deadline exceeded while queued")
			p.queueTimedOut(d, now)
			continue
		}
		if !p.tryDispatch(ctx, d) {
			break
		}
		p.queue = p.queue[1:]
	}
	p.answerDrainers(ctx)
}

// pumpSessions is pump with session calls queued: those wait for their own
// worker, so one that cannot go yet holds up no other call.
func (p *poolActor) pumpSessions(ctx actor.Context) {
	now := time.Now()
	blocked := false // a call for any worker found none free
	kept := p.queue[:0]
	for _, d := range p.queue {
		switch {
		case d.deadlinePassed(now):
			p.dequeued(d)
			p.reject(ctx, d, apb.Failure_CODE_DEADLINE, "deadline exceeded while queued")
			p.queueTimedOut(d, now)
		case d.sess != nil && p.dispatchSession(ctx, d):
			p.sessionQueued--
		case d.sess == nil && !blocked && p.tryDispatch(ctx, d):
		default:
			blocked = blocked || d.sess == nil
			kept = append(kept, d)
		}
	}
	clear(p.queue[len(kept):])
	p.queue = kept
	p.answerDrainers(ctx)
}

// dequeued counts d out of the queue's session bookkeeping.
func (p *poolActor) dequeued(d *dispatch) {
	if d.sess != nil {
		p.sessionQueued--
		d.sess.active--
	}
}

// queueTimedOut publishes that d's deadline passed while it was queued.
func (p *poolActor) queueTimedOut(d *dispatch, now time.Time) {
	publish(p.s.Events, telemetry.QueueTimeout{Time: now, Pool: p.s.Name, Tool: d.req.GetExecute().GetTool(),
		Waited: now.Sub(d.queuedAt)})
}

func (p *poolActor) reject(ctx actor.Context, d *dispatch, code apb.Failure_Code, msg string) {
	ctx.Send(d.caller, &apb.CallReply{RequestId: d.req.GetExecute().GetRequestId(),
		Failure: &apb.Failure{Code: code, Message: msg}})
}

// onRequeue puts a call that never reached Python back at the head of the
// queue, unless the pool has failed meanwhile.
func (p *poolActor) onRequeue(ctx actor.Context, d *dispatch) {
	delete(p.inflight, d.req.GetExecute().GetRequestId())
	if p.failed != "" {
		p.reject(ctx, d, apb.Failure_CODE_POOL_UNAVAILABLE, fmt.Sprintf("pool %q has failed: %s", p.s.Name, p.failed))
		return
	}
	if d.sess != nil {
		delete(p.sessionCalls, d.req.GetExecute().GetRequestId())
		if d.sess.lost != "" || p.sessions[d.sess.id] != d.sess {
			d.sess.active--
			p.reject(ctx, d, apb.Failure_CODE_SESSION_LOST, orText(d.sess.lost, "session "+d.sess.id+" was closed"))
			return
		}
		p.sessionQueued++
	}
	p.queue = append([]*dispatch{d}, p.queue...)
	p.pump(ctx)
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (p *poolActor) onCancel(ctx actor.Context, m *apb.CancelCall) {
	id := m.GetRequestId()
	for i, d := range p.queue {
		if d.req.GetExecute().GetRequestId() == id {
			p.queue = append(p.queue[:i], p.queue[i+1:]...)
			p.dequeued(d)
			p.reject(ctx, d, apb.Failure_CODE_CANCELLED, "cancelled by the caller while queued")
			if now := time.Now(); d.deadlinePassed(now) { // the caller's deadline, not a cancel
				p.queueTimedOut(d, now)
			}
			p.answerDrainers(ctx)
			return
		}
	}
	if w, ok := p.inflight[id]; ok {
		ctx.Send(w.pid, m)
	}
}

func (p *poolActor) onReady(ctx actor.Context, m *workerReady) {
	w := p.byID[m.worker.Id]
	if w == nil {
		return
	}
	w.ready, w.gen, w.load, w.capacity, w.osPid = true, m.gen, 0, m.capacity, m.pid
	w.started, w.requests, w.rss, w.killedFor = p.now(), 0, 0, nil
	w.busy, w.bootCPU = 0, m.bootCPU
	publish(p.s.Events, telemetry.WorkerReady{Time: time.Now(), Pool: p.s.Name, Worker: w.slot.id, Pid: m.pid,
		Capacity: m.capacity, Boot: m.boot})
	if w.replaces != nil {
		p.promoteReplacement(ctx, w)
	}
	p.answerWaiters(ctx)
	p.pump(ctx)
}

// onDown takes a worker incarnation out of routing: its process died, or it
// is about to be killed. Its running calls are answered by their goroutines.
func (p *poolActor) onDown(ctx actor.Context, m *workerDown) {
	w := p.byID[m.worker.Id]
	if w == nil || w.gen != m.gen {
		return
	}
	if w.load > 0 && w.ready {
		w.busy += time.Since(w.busySince)
	}
	w.ready, w.load = false, 0
	for id, iw := range p.inflight {
		if iw == w {
			delete(p.inflight, id)
			p.sessionCallDone(id)
		}
	}
	p.sessionsLost(ctx, w, m.gen, orText(m.why, "its process died"))
	p.answerDrainers(ctx)
}

func (p *poolActor) onFreed(ctx actor.Context, m *slotFreed) {
	w := p.byID[m.worker.Id]
	if w == nil || w.gen != m.gen {
		return
	}
	delete(p.inflight, m.id)
	if len(p.sessionCalls) > 0 {
		p.sessionCallDone(m.id)
	}
	if w.load > 0 {
		w.load--
		if w.load == 0 {
			w.busy += time.Since(w.busySince)
		}
	}
	w.requests++
	p.served++
	p.retireIfIdle(ctx, w)
	p.pump(ctx)
}

func (p *poolActor) answerWaiters(ctx actor.Context) {
	var reply *ReadyReply
	switch {
	case p.failed != "":
		reply = &ReadyReply{Err: fmt.Errorf("pool %q failed to start: %w", p.s.Name, p.failErr)}
	case p.readyCount() == p.s.Size:
		reply = &ReadyReply{}
	default:
		return
	}
	for _, w := range p.waiters {
		ctx.Send(w, reply)
	}
	p.waiters = nil
}

func (p *poolActor) answerDrainers(ctx actor.Context) {
	if !p.draining || len(p.queue) > 0 || len(p.inflight) > 0 {
		return
	}
	for _, d := range p.drainers {
		ctx.Send(d, &Drained{})
	}
	p.drainers = nil
}

// readyCount counts the members (not replacements starting, not workers
// retiring) that are ready.
func (p *poolActor) readyCount() int {
	n := 0
	for _, w := range p.workers {
		if w.ready && w.member() {
			n++
		}
	}
	return n
}

// fail gives up on the pool: its workers stop, queued calls and waiters are
// answered, and every later call is refused with the reason.
func (p *poolActor) fail(ctx actor.Context, err error) {
	if p.failed != "" {
		return
	}
	p.failed, p.failErr = err.Error(), err
	reason := p.failed
	p.s.Logger.Error("pool failed", "reason", reason)
	for _, w := range p.workers {
		w.ready = false
		ctx.Stop(w.pid)
	}
	for _, d := range p.queue {
		p.dequeued(d)
		p.reject(ctx, d, apb.Failure_CODE_POOL_UNAVAILABLE, fmt.Sprintf("pool %q has failed: %s", p.s.Name, reason))
	}
	p.queue = nil
	p.abandonRecycles(ctx, fmt.Errorf("%w: pool %q has failed: %s", ErrPoolUnavailable, p.s.Name, reason))
	p.answerWaiters(ctx)
	p.answerDrainers(ctx)
}

func (p *poolActor) status() *PoolStatus {
	st := &PoolStatus{Name: p.s.Name, Size: p.s.Size, Queued: len(p.queue), InFlight: len(p.inflight),
		Failed: p.failed != "", Reason: p.failed, Profile: p.s.Profile, QueueSize: p.s.QueueSize,
		NoFreeCapacity: p.noCapacity, Saturated: p.saturated, Recycling: p.recycling + len(p.pending),
		Recycles: map[string]int64{}, Requests: p.served, Restarts: p.restarts,
		LastSaturated: p.lastSaturated, Sessions: len(p.sessions)}
	for r, n := range p.recycles {
		st.Recycles[string(r)] = n
	}
	st.Ready = p.readyCount()
	for _, w := range p.workers {
		ws := WorkerStatus{PID: w.pid, ID: w.slot.id, Pid: w.osPid, Ready: w.ready, Capacity: w.capacity, Load: w.load,
			Restarts: w.restarts, AtCapacity: w.atCapacity, Requests: w.requests, RSS: w.rss, Retiring: w.retiring,
			Starting: w.replaces != nil, LastExit: w.lastExit, Busy: w.busyNow(), BootCPU: w.bootCPU, Sessions: w.sessions}
		if w.ready {
			ws.Started = w.started
		}
		st.Workers = append(st.Workers, ws)
	}
	return st
}
