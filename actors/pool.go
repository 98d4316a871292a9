package actors

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	"github.com/snakepit-go/snakepit/supervision"
)

// poolActor routes calls to the least-loaded worker with free capacity,
// queues them (bounded) when every worker is full, and supervises its
// workers: it is their parent and implements actor.SupervisorStrategy.
// Its state is in parts, each in the file of the same name with the
// handlers that change it: workers (roster.go), calls (queue.go), recycler
// (recycler.go), sessions (sessions.go); restarts are decided in
// supervise.go.
type poolActor struct {
	s        PoolSettings
	workers  roster
	calls    callQueue
	recycler recycler
	sessions sessionTable
	sup      *supervision.Supervisor
	restarts int      // restarts since the start, workers since gone included
	timers   timerSet // pending restarts and drains
	// workerSettings are what new workers start with; replaced (never
	// changed in place: workers read theirs) when the profile changes.
	workerSettings *WorkerSettings
	waiters        []*actor.PID // AwaitReady callers
	drainers       []*actor.PID // Drain callers
	draining       bool
	stopping       bool
	failErr        error // non-nil once the pool gave up: why
}

// poolFailed is sent by the pool to itself when it must give up.
type poolFailed struct{ err error }

// NewPoolProps returns the props of a pool actor.
func NewPoolProps(s PoolSettings) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return newPool(s) }, actor.WithDispatcher(inlineDispatcher))
}

func newPool(s PoolSettings) *poolActor {
	if s.Clock == nil {
		s.Clock = supervision.SystemClock{}
	}
	s.Worker.Pool, s.Worker.Events = s.Name, s.Events
	if s.Worker.Clock == nil {
		s.Worker.Clock = s.Clock
	}
	return &poolActor{s: s, sup: supervision.New(s.Restart, s.Clock, nil),
		workers:  roster{byID: map[string]*worker{}, random: rand.Float64},
		calls:    newCallQueue(s.QueueSize),
		recycler: newRecycler(s.Recycle.WithDefaults(s.Size)),
		sessions: newSessionTable(s.Sessions.WithDefaults()),
		timers:   timerSet{}, workerSettings: &s.Worker}
}

func (p *poolActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *apb.CallRequest:
		p.onCall(ctx, &dispatch{req: m, caller: ctx.Sender()})
	case *apb.CancelCall:
		p.onCancel(ctx, m)
	case *slotFreed:
		p.onFreed(ctx, m)
	case *requeue:
		p.onRequeue(ctx, m.d)
	case *workerReady:
		p.onReady(ctx, m)
	case *workerDown:
		p.onDown(ctx, m)
	case *actor.Terminated:
		p.onTerminated(ctx, m.Who)
	case *restartDue:
		p.onRestartDue(ctx, m)
	default:
		if !p.receiveRequest(ctx, m) && !p.receiveRecycle(ctx, m) && !p.receiveSession(ctx, m) {
			p.receiveLifecycle(ctx, m)
		}
	}
}

// receiveRequest handles the runtime's requests other than calls.
func (p *poolActor) receiveRequest(ctx actor.Context, msg any) bool {
	switch msg.(type) {
	case *AwaitReady:
		p.waiters = append(p.waiters, ctx.Sender())
		p.answerWaiters(ctx)
	case *Drain:
		p.onDrain(ctx)
	case *StatusRequest:
		ctx.Respond(p.status())
	case *DescribeQuery:
		p.forwardDescribe(ctx)
	default:
		return false
	}
	return true
}

func (p *poolActor) receiveRecycle(ctx actor.Context, msg any) bool {
	switch m := msg.(type) {
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
	default:
		return false
	}
	return true
}

func (p *poolActor) receiveSession(ctx actor.Context, msg any) bool {
	switch m := msg.(type) {
	case *OpenSession:
		p.onOpenSession(ctx, m)
	case *CloseSession:
		p.onCloseSession(ctx, m)
	case *sessionEnded:
		p.onSessionEnded(ctx, m)
	case *sessionSweep:
		if len(p.sessions.open) > 0 {
			p.onSessionSweep(ctx)
		}
	case *sessionDrainOver:
		p.onSessionDrainOver(ctx, m)
	default:
		return false
	}
	return true
}

// receiveLifecycle handles the pool actor's own start, failure and stop.
func (p *poolActor) receiveLifecycle(ctx actor.Context, msg any) {
	switch m := msg.(type) {
	case *actor.Started:
		p.onStarted(ctx)
	case *poolFailed:
		p.fail(ctx, m.err)
	case *actor.Stopping:
		p.onStopping(ctx)
	}
}

func (p *poolActor) onStarted(ctx actor.Context) {
	for i := 0; i < p.s.Size; i++ {
		p.spawnWorker(ctx, i)
	}
	if p.recycler.policy.Enabled() {
		ctx.Spawn(newLifecycleProps(p.recycler.policy, p.s.Clock, p.s.Logger.Named("lifecycle")))
	}
	p.sessions.sweep = tickSelf(ctx, p.sessions.policy.sweepEvery(), &sessionSweep{})
}

func (p *poolActor) onDrain(ctx actor.Context) {
	p.draining = true
	p.abandonRecycles(ctx, poolStoppingError(p.s.Name))
	p.drainers = append(p.drainers, ctx.Sender())
	p.answerDrainers(ctx)
}

func (p *poolActor) onStopping(ctx actor.Context) {
	p.abandonRecycles(ctx, poolStoppingError(p.s.Name))
	p.stopping = true
	p.timers.stopAll()
	if p.sessions.sweep != nil {
		close(p.sessions.sweep)
		p.sessions.sweep = nil
	}
}

func (p *poolActor) now() time.Time { return p.s.Clock.Now() }

// failReason is why the pool gave up ("" while it has not).
func (p *poolActor) failReason() string {
	if p.failErr == nil {
		return ""
	}
	return p.failErr.Error()
}

func (p *poolActor) answerWaiters(ctx actor.Context) {
	var reply *ReadyReply
	switch {
	case p.failErr != nil:
		reply = &ReadyReply{Err: fmt.Errorf("pool %q failed to start: %w", p.s.Name, p.failErr)}
	case p.workers.readyCount() == p.s.Size:
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
	if !p.draining || !p.calls.idle() {
		return
	}
	for _, d := range p.drainers {
		ctx.Send(d, &Drained{})
	}
	p.drainers = nil
}

// forwardDescribe sends a DescribeQuery on to a ready worker.
func (p *poolActor) forwardDescribe(ctx actor.Context) {
	if w := p.workers.firstReady(); w != nil {
		ctx.Forward(w.pid)
		return
	}
	ctx.Respond(&DescribeAnswer{Err: fmt.Errorf("pool %q has no ready worker to describe its tools", p.s.Name)})
}

// fail gives up on the pool: its workers stop, queued calls and waiters are
// answered, and every later call is refused with the reason.
func (p *poolActor) fail(ctx actor.Context, err error) {
	if p.failErr != nil {
		return
	}
	p.failErr = err
	reason := err.Error()
	p.s.Logger.Error("pool failed", "reason", reason)
	for _, w := range p.workers.list {
		w.ready = false
		ctx.Stop(w.pid)
	}
	for _, d := range p.calls.takeAll() {
		p.dropQueued(ctx, d, apb.Failure_CODE_POOL_UNAVAILABLE, poolFailedText(p.s.Name, reason))
	}
	p.abandonRecycles(ctx, poolFailedError(p.s.Name, reason))
	p.answerWaiters(ctx)
	p.answerDrainers(ctx)
}
