package actors

import (
	"github.com/asynkron/protoactor-go/actor"
	"github.com/hashicorp/go-hclog"

	"github.com/snakepit-go/snakepit/pyworker"
	"github.com/snakepit-go/snakepit/supervision"
)

// lifecycleActor checks its pool's workers on a schedule and asks the pool
// to recycle those due (age, request count, memory), by the pool's clock.
// It is a child of the pool. Its ticker is a plain time.Ticker in a
// goroutine feeding the mailbox (tickSelf); memory is read from /proc in a
// goroutine too, so Receive never waits. The pool does the recycling
// (recycler.go).
type lifecycleActor struct {
	policy supervision.RecyclePolicy
	clock  supervision.Clock
	log    hclog.Logger
	done   chan struct{}
	busy   bool // a check is in progress: skip ticks until it ends
}

// Messages of the lifecycle actor.
type (
	lifecycleTick struct{}
	// lifecycleQuery asks the pool for its workers' facts; the pool answers
	// with *lifecycleFacts.
	lifecycleQuery struct{}
	lifecycleFacts struct{ workers []workerFacts }
	workerFacts    struct {
		id    string
		pid   int
		facts supervision.WorkerFacts
	}
	// memorySampled carries the facts back with their RSS filled in.
	memorySampled struct{ workers []workerFacts }
	// lifecycleReport tells the pool the sampled memory and the workers due.
	lifecycleReport struct {
		rss map[string]uint64
		due []dueRecycle
	}
	dueRecycle struct {
		id      string
		verdict supervision.Verdict
	}
)

func newLifecycleProps(policy supervision.RecyclePolicy, clock supervision.Clock, log hclog.Logger) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &lifecycleActor{policy: policy, clock: clock, log: log}
	}, actor.WithDispatcher(inlineDispatcher))
}

func (l *lifecycleActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		l.startTicker(ctx)
	case *lifecycleTick:
		if !l.busy {
			l.busy = true
			ctx.Request(ctx.Parent(), &lifecycleQuery{})
		}
	case *lifecycleFacts:
		if l.policy.SamplesMemory() {
			l.sampleMemory(ctx, m.workers)
			return
		}
		l.evaluate(ctx, m.workers)
	case *memorySampled:
		l.evaluate(ctx, m.workers)
	case *actor.Stopping:
		if l.done != nil {
			close(l.done)
		}
	}
}

func (l *lifecycleActor) startTicker(ctx actor.Context) {
	l.done = tickSelf(ctx, l.policy.CheckInterval, &lifecycleTick{})
}

// sampleMemory reads each worker's RSS in a goroutine.
func (l *lifecycleActor) sampleMemory(ctx actor.Context, ws []workerFacts) {
	self, root := ctx.Self(), ctx.ActorSystem().Root
	go func() {
		for i := range ws {
			if rss, err := pyworker.ResidentBytes(ws[i].pid); err == nil {
				ws[i].facts.RSS = rss
			}
		}
		root.Send(self, &memorySampled{workers: ws})
	}()
}

func (l *lifecycleActor) evaluate(ctx actor.Context, ws []workerFacts) {
	l.busy = false
	now := l.clock.Now()
	r := &lifecycleReport{rss: map[string]uint64{}}
	for _, w := range ws {
		if w.facts.RSS > 0 {
			r.rss[w.id] = w.facts.RSS
		}
		if v, due := l.policy.Check(w.facts, now); due {
			r.due = append(r.due, dueRecycle{id: w.id, verdict: v})
		}
	}
	ctx.Send(ctx.Parent(), r)
}
