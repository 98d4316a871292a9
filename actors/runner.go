package actors

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	"github.com/snakepit-go/snakepit/pyworker"
	wpb "github.com/snakepit-go/snakepit/pyworker/pb"
	"github.com/snakepit-go/snakepit/telemetry"
)

// job is one call handed to a runner.
type job struct {
	d      *dispatch
	ctx    context.Context
	cancel context.CancelFunc
}

// runner holds what a call needs, fixed for one worker incarnation. Its
// goroutines live as long as the incarnation, so a call costs no goroutine
// start and no stack growth.
type runner struct {
	h            *pyworker.Handle
	self, parent *actor.PID
	root         *actor.RootContext
	gen          uint64
	id, pool     string
	events       *telemetry.Bus
	settle       time.Duration          // WorkerSettings.crashSettle
	killedBy     atomic.Pointer[string] // set before the runtime kills the process
	stacks       atomic.Pointer[string] // the Python stacks dumped before a kill for being stuck
	// closing is set, after the pool was told the worker is down, once the
	// incarnation must run no more calls (its connection broke, or it is
	// being killed): a job a runner has not started yet goes back to the pool.
	closing atomic.Bool
}

// startRunners starts capacity goroutines serving jobs until it is closed.
func (w *workerActor) startRunners(ctx actor.Context, capacity int) {
	s := w.slot.settings
	w.run = &runner{h: w.h, self: ctx.Self(), parent: ctx.Parent(), root: ctx.ActorSystem().Root, gen: w.gen, id: w.slot.id,
		pool: s.Pool, events: s.Events, settle: s.settle()}
	w.jobs = make(chan job, capacity)
	for i := 0; i < capacity; i++ {
		go w.run.serve(w.jobs)
	}
}

func (r *runner) serve(jobs <-chan job) {
	for j := range jobs {
		if r.closing.Load() {
			r.giveBack(j)
			continue
		}
		r.call(j)
	}
}

// giveBack returns a job that never reached Python to the pool, which
// routes it elsewhere.
func (r *runner) giveBack(j job) {
	j.cancel()
	r.root.Send(r.parent, &requeue{d: j.d})
	r.root.Send(r.self, &callDone{id: j.d.id()})
}

// goingDown tells the pool that this incarnation takes no more calls, then
// marks it closing. In that order: whatever a runner sends the pool after
// seeing closing (a call given back) arrives after the pool knows.
func (r *runner) goingDown(why string) {
	r.root.Send(r.parent, &workerDown{worker: r.self, gen: r.gen, why: why})
	r.closing.Store(true)
}

// down tells the pool the process died under a call: a crash is told to
// the pool before the caller hears of it, so that a caller never sees the
// pool route to a worker it knows is dead.
func (r *runner) down() { r.root.Send(r.parent, &workerDown{worker: r.self, gen: r.gen}) }

func (r *runner) call(j job) {
	if j.d.req.GetStreamWindow() > 0 {
		r.stream(j)
		return
	}
	defer j.cancel()
	began := time.Now()
	r.finish(j, r.runCall(j.ctx, j.d.req.GetExecute()), began)
}

// finish answers a call's caller and gives its slot back (or to the
// watchdog, when Python may still be running it).
func (r *runner) finish(j job, reply *apb.CallReply, began time.Time) {
	req := j.d.req.GetExecute()
	reply.WorkerId = r.id
	reply.ReboundFrom = j.d.reboundFrom
	if f := reply.GetFailure(); f != nil {
		r.annotateCrash(f)
	}
	r.release(req, reply)
	r.root.Send(j.d.caller, reply)
	r.root.Send(r.self, &callDone{id: req.GetRequestId()})
	r.requestExecuted(req.GetTool(), began, reply)
}

// annotateCrash adds why the runtime killed the worker, and the stacks it
// dumped first, to a crash failure.
func (r *runner) annotateCrash(f *apb.Failure) {
	if f.GetCode() != apb.Failure_CODE_WORKER_CRASHED {
		return
	}
	if why := r.killedBy.Load(); why != nil {
		f.KilledBy = *why
	}
	if st := r.stacks.Load(); st != nil {
		f.Stacks = *st
	}
}

// release hands a finished call's slot back: to the pool at once, or, when
// Python may still be running the call, to the watchdog.
func (r *runner) release(req *wpb.ExecuteRequest, reply *apb.CallReply) {
	if reply.GetFailure().GetCode() == apb.Failure_CODE_TRANSPORT {
		// A broken connection: the pool stops routing here before anything
		// could tell it a slot is free (it frees this worker's slots itself),
		// then the worker actor has the process killed and replaced.
		r.goingDown("its connection failed")
		r.root.Send(r.self, &transportBroken{gen: r.gen, err: reply.GetFailure().GetMessage()})
		return
	}
	if gaveUp(reply) {
		// Python may still be running it: the worker actor frees the slot
		// once Python says the call ended, or kills the worker (watchdog.go).
		r.root.Send(r.self, &callAbandoned{gen: r.gen, id: req.GetRequestId(), tool: req.GetTool()})
	} else {
		// The slot goes straight back to the pool, before the caller hears:
		// the next call must not wait for a hop through the worker actor.
		r.root.Send(r.parent, &slotFreed{worker: r.self, gen: r.gen, id: req.GetRequestId()})
	}
}

// runCall executes req and turns every way it can end into a CallReply.
func (r *runner) runCall(ctx context.Context, req *wpb.ExecuteRequest) *apb.CallReply {
	out := &apb.CallReply{RequestId: req.GetRequestId()}
	reply, err := r.h.Conn.Execute(ctx, req)
	if err == nil {
		out.Reply = reply
		return out
	}
	out.Failure = r.classifyFailure(ctx, err)
	return out
}

// classifyFailure tells why a call failed: its deadline, its caller, its
// size, the process's death (waiting up to settle to learn of it), or the
// connection.
func (r *runner) classifyFailure(ctx context.Context, err error) *apb.Failure {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return &apb.Failure{Code: apb.Failure_CODE_DEADLINE, Message: "deadline exceeded while the worker ran the call"}
	case errors.Is(ctx.Err(), context.Canceled):
		return &apb.Failure{Code: apb.Failure_CODE_CANCELLED, Message: "cancelled by the caller"}
	case errors.Is(err, pyworker.ErrMessageTooLarge):
		return &apb.Failure{Code: apb.Failure_CODE_TOO_LARGE, Message: err.Error()}
	}
	t := time.NewTimer(r.settle)
	defer t.Stop()
	select {
	case <-r.h.Proc.Done():
		r.down()
		st := r.h.Proc.Status()
		return &apb.Failure{Code: apb.Failure_CODE_WORKER_CRASHED, Message: st.String(),
			ExitCode: int32(st.Code), Signal: int32(st.Signal), StderrTail: r.h.FinalStderrTail(),
			OomKnown: st.OOM.Known, OomKilled: st.OOM.Killed, OomDetail: st.OOM.Detail}
	case <-t.C:
		return &apb.Failure{Code: apb.Failure_CODE_TRANSPORT, Message: err.Error()}
	}
}
