package actors

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hashicorp/go-hclog"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	"github.com/snakepit-go/snakepit/pyworker"
	wpb "github.com/snakepit-go/snakepit/pyworker/pb"
	"github.com/snakepit-go/snakepit/supervision"
	"github.com/snakepit-go/snakepit/telemetry"
)

// WorkerSettings are shared by every worker of a pool.
type WorkerSettings struct {
	Spec          pyworker.Spec              // template; ID and Logger are set per worker
	Watchdog      supervision.WatchdogPolicy // defaults applied
	Pool          string                     // the pool's name, for events
	Events        *telemetry.Bus             // nil: no events
	StartTimeout  time.Duration              // spawn to ready
	ShutdownGrace time.Duration              // in-flight calls may finish within it on stop
	KillAfter     time.Duration              // after SIGTERM, before SIGKILL
}

// crashSettle bounds how long a call whose connection broke waits to learn
// whether the process died (and so report a crash, not a transport error).
const crashSettle = time.Second

// workerSlot is the part of a worker that survives its restarts.
type workerSlot struct {
	id       string
	gen      atomic.Uint64
	settings *WorkerSettings
	log      hclog.Logger
}

// workerActor owns one Python process and its connection.
type workerActor struct {
	slot       *workerSlot
	gen        uint64
	h          *pyworker.Handle
	cancel     context.CancelFunc // ends a launch in progress
	inflight   map[string]context.CancelFunc
	stopping   bool
	run        *runner  // this incarnation's call context
	jobs       chan job // feeds its runners; closed when the process is let go
	killedBy   string   // why the runtime killed the process, if it did
	launchedAt time.Time

	// Watchdog state (watchdog.go).
	abandoned   map[string]abandonedCall
	probing     bool
	healthDone  chan struct{}
	checking    bool
	healthFails int
	gil         gilState
}

func newWorkerProps(slot *workerSlot) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &workerActor{slot: slot, inflight: map[string]context.CancelFunc{}, abandoned: map[string]abandonedCall{}}
	}, actor.WithDispatcher(inlineDispatcher))
}

func (w *workerActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		w.launch(ctx)
	case *launched:
		w.onLaunched(ctx, m)
	case *launchFailed:
		w.onLaunchFailed(m)
	case *dispatch:
		w.execute(ctx, m)
	case *callDone:
		w.onCallDone(m)
	case *apb.CancelCall:
		if cancel, ok := w.inflight[m.GetRequestId()]; ok {
			cancel()
		}
	case *processExited:
		w.onExit(ctx, m)
	case *transportBroken:
		w.onTransportBroken(m)
	case *killWorker:
		w.onKill(m)
	case *callAbandoned:
		w.onCallAbandoned(ctx, m)
	case *probeDue:
		if m.gen == w.gen {
			w.probe(ctx)
		}
	case *inFlightSample:
		w.onInFlightSample(ctx, m)
	case *healthTick:
		w.onHealthTick(ctx, m)
	case *healthChecked:
		w.onHealthChecked(ctx, m)
	case *DescribeQuery, *StatsQuery:
		w.answerQuery(ctx, m)
	case *endSession:
		w.onEndSession(ctx, m)
	case *retire:
		w.onRetire(ctx)
	case *processGone:
		ctx.Stop(ctx.Self())
	case *actor.Restarting:
		w.release(func(h *pyworker.Handle) { h.Kill() })
	case *actor.Stopping:
		w.stopping = true
		s := w.slot.settings
		w.release(func(h *pyworker.Handle) { h.Stop(s.ShutdownGrace, s.KillAfter) })
	}
}

// launch starts the Python process in a goroutine: spawn, handshake, connect.
func (w *workerActor) launch(ctx actor.Context) {
	w.gen = w.slot.gen.Add(1)
	w.launchedAt = time.Now()
	publish(w.slot.settings.Events, telemetry.WorkerStarted{Time: w.launchedAt, Pool: w.slot.settings.Pool, Worker: w.slot.id})
	spec := w.slot.settings.Spec
	spec.ID, spec.Logger = w.slot.id, w.slot.log
	spec.Callbacks = withOrigin(spec.Callbacks, w.slot.id)
	lctx, cancel := context.WithTimeout(context.Background(), w.slot.settings.StartTimeout)
	w.cancel = cancel
	self, root, gen := ctx.Self(), ctx.ActorSystem().Root, w.gen
	go func() {
		h, err := pyworker.Launch(lctx, spec)
		if err == nil && errors.Is(lctx.Err(), context.Canceled) {
			h.Kill() // the actor is restarting or stopping: nobody wants it
			err = lctx.Err()
		}
		if err != nil {
			root.Send(self, &launchFailed{gen: gen, err: err})
			return
		}
		st, _ := pyworker.ReadStat(h.Pid()) // zero where /proc cannot tell
		root.Send(self, &launched{gen: gen, h: h, bootCPU: st.CPU()})
	}()
}

func (w *workerActor) onLaunched(ctx actor.Context, m *launched) {
	if m.gen != w.gen || w.stopping {
		go m.h.Kill() // a launch this incarnation no longer wants
		return
	}
	w.cancel()
	w.h = m.h
	w.slot.log.Debug("worker ready", "pid", m.h.Pid(), "python", m.h.Python)
	self, root, gen, proc, h := ctx.Self(), ctx.ActorSystem().Root, w.gen, m.h.Proc, m.h
	go func() {
		<-proc.Done()
		root.Send(self, &processExited{gen: gen, status: proc.Status(), stderr: h.FinalStderrTail()})
	}()
	w.startRunners(ctx, w.slot.settings.Spec.Capacity)
	w.startHealthChecks(ctx)
	w.noticeGIL(ctx, m.h.Health)
	ctx.Send(ctx.Parent(), &workerReady{worker: self, gen: w.gen, capacity: w.slot.settings.Spec.Capacity, pid: m.h.Pid(),
		boot: time.Since(w.launchedAt), bootCPU: m.bootCPU})
}

func (w *workerActor) onLaunchFailed(m *launchFailed) {
	if m.gen != w.gen || w.stopping {
		return
	}
	if errors.Is(m.err, pyworker.ErrBootFailed) {
		panic(&bootFailed{err: m.err})
	}
	panic(&launchError{err: m.err})
}

// execute hands one call to the incarnation's call runners; the runner
// answers the caller itself, so a reply never depends on this actor
// surviving.
func (w *workerActor) execute(ctx actor.Context, d *dispatch) {
	if !w.takesCalls() || d.gen != w.gen {
		ctx.Send(ctx.Parent(), &requeue{d: d})
		return
	}
	req := d.req.GetExecute()
	cctx, cancel := callContext(req.GetDeadlineUnixNano())
	w.inflight[req.GetRequestId()] = cancel
	j := job{d: d, ctx: cctx, cancel: cancel}
	select {
	case w.jobs <- j:
	default: // more calls than capacity: the pool never does this, but never block
		go w.run.call(j)
	}
}

// takesCalls reports whether this incarnation may be handed a call: it is
// ready, not stopping, not being killed, and its connection is not broken.
func (w *workerActor) takesCalls() bool {
	return w.h != nil && !w.stopping && w.killedBy == "" && !w.run.closing.Load()
}

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
	killedBy     atomic.Pointer[string] // set before the runtime kills the process
	stacks       atomic.Pointer[string] // the Python stacks dumped before a kill for being stuck
	// closing is set, after the pool was told the worker is down, once the
	// incarnation must run no more calls (its connection broke, or it is
	// being killed): a job a runner has not started yet goes back to the pool.
	closing atomic.Bool
}

// startRunners starts capacity goroutines serving jobs until it is closed.
func (w *workerActor) startRunners(ctx actor.Context, capacity int) {
	w.run = &runner{h: w.h, self: ctx.Self(), parent: ctx.Parent(), root: ctx.ActorSystem().Root, gen: w.gen, id: w.slot.id,
		pool: w.slot.settings.Pool, events: w.slot.settings.Events}
	w.jobs = make(chan job, capacity)
	for i := 0; i < capacity; i++ {
		go func(r *runner, jobs <-chan job) {
			for j := range jobs {
				if r.closing.Load() {
					r.giveBack(j)
					continue
				}
				r.call(j)
			}
		}(w.run, w.jobs)
	}
}

// giveBack returns a job that never reached Python to the pool, which
// routes it elsewhere.
func (r *runner) giveBack(j job) {
	j.cancel()
	r.root.Send(r.parent, &requeue{d: j.d})
	r.root.Send(r.self, &callDone{id: j.d.req.GetExecute().GetRequestId()})
}

// goingDown tells the pool that this incarnation takes no more calls, then
// marks it closing. In that order: whatever a runner sends the pool after
// seeing closing (a call given back) arrives after the pool knows.
func (r *runner) goingDown(why string) {
	r.root.Send(r.parent, &workerDown{worker: r.self, gen: r.gen, why: why})
	r.closing.Store(true)
}

func (r *runner) call(j job) {
	if j.d.req.GetStreamWindow() > 0 {
		r.stream(j)
		return
	}
	defer j.cancel()
	began := time.Now()
	// A crash is told to the pool before the caller hears of it, so that a
	// caller never sees the pool route to a worker it knows is dead.
	down := func() { r.root.Send(r.parent, &workerDown{worker: r.self, gen: r.gen}) }
	r.finish(j, runCall(j.ctx, r.h, j.d.req.GetExecute(), down), began)
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
func runCall(ctx context.Context, h *pyworker.Handle, req *wpb.ExecuteRequest, down func()) *apb.CallReply {
	out := &apb.CallReply{RequestId: req.GetRequestId()}
	reply, err := h.Conn.Execute(ctx, req)
	if err == nil {
		out.Reply = reply
		return out
	}
	out.Failure = classifyFailure(ctx, h, err, down)
	return out
}

func classifyFailure(ctx context.Context, h *pyworker.Handle, err error, down func()) *apb.Failure {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return &apb.Failure{Code: apb.Failure_CODE_DEADLINE, Message: "deadline exceeded while the worker ran the call"}
	case errors.Is(ctx.Err(), context.Canceled):
		return &apb.Failure{Code: apb.Failure_CODE_CANCELLED, Message: "cancelled by the caller"}
	case errors.Is(err, pyworker.ErrMessageTooLarge):
		return &apb.Failure{Code: apb.Failure_CODE_TOO_LARGE, Message: err.Error()}
	}
	t := time.NewTimer(crashSettle)
	defer t.Stop()
	select {
	case <-h.Proc.Done():
		down()
		st := h.Proc.Status()
		return &apb.Failure{Code: apb.Failure_CODE_WORKER_CRASHED, Message: st.String(),
			ExitCode: int32(st.Code), Signal: int32(st.Signal), StderrTail: h.FinalStderrTail(),
			OomKnown: st.OOM.Known, OomKilled: st.OOM.Killed, OomDetail: st.OOM.Detail}
	case <-t.C:
		return &apb.Failure{Code: apb.Failure_CODE_TRANSPORT, Message: err.Error()}
	}
}

func (w *workerActor) onCallDone(m *callDone) {
	delete(w.inflight, m.id)
}

func (w *workerActor) onExit(ctx actor.Context, m *processExited) {
	if m.gen != w.gen || w.stopping {
		return
	}
	if w.killedBy != "" {
		w.slot.log.Info("worker killed by the runtime", "pid", w.h.Pid(), "status", m.status.String(), "why", w.killedBy)
	} else {
		w.slot.log.Warn("worker process died", "pid", w.h.Pid(), "status", m.status.String())
	}
	ctx.Send(ctx.Parent(), &workerDown{worker: ctx.Self(), gen: w.gen})
	c := &crashed{status: m.status, killedBy: w.killedBy, stderr: m.stderr}
	if st := w.run.stacks.Load(); st != nil {
		c.stacks = *st
	}
	panic(c)
}

// onKill kills the process at once for the reason the pool gives; its exit
// then takes the crash path, carrying the reason.
func (w *workerActor) onKill(m *killWorker) {
	if m.gen != w.gen || w.stopping {
		return
	}
	w.kill(m.detail)
}

// onTransportBroken replaces a worker whose connection failed while its
// process lives on: it cannot be trusted with another call.
func (w *workerActor) onTransportBroken(m *transportBroken) {
	if m.gen != w.gen || w.h == nil || w.stopping {
		return
	}
	// Its exit arrives as processExited: the crash path restarts it.
	w.kill("its connection failed while the process lived on: " + m.err)
}

// onRetire stops a retired worker's process gracefully in a goroutine; the
// actor stops once the process is gone (processGone), so that the pool
// answers a recycle only after the old process has exited.
func (w *workerActor) onRetire(ctx actor.Context) {
	if w.stopping {
		return
	}
	w.stopping = true
	if w.h == nil {
		ctx.Stop(ctx.Self())
		return
	}
	self, root, s := ctx.Self(), ctx.ActorSystem().Root, w.slot.settings
	w.release(func(h *pyworker.Handle) {
		h.Stop(s.ShutdownGrace, s.KillAfter)
		root.Send(self, &processGone{})
	})
}

// release ends the launch in progress and hands the process to end in a
// goroutine: nothing here may wait for it.
func (w *workerActor) release(end func(*pyworker.Handle)) {
	if w.cancel != nil {
		w.cancel()
	}
	// In-flight calls are left alone: they end with the process, and their
	// goroutines report how (a crash, or a reply within the stop grace).
	if w.jobs != nil {
		close(w.jobs) // runners finish the calls they hold, then exit
		w.jobs = nil
	}
	if w.healthDone != nil {
		close(w.healthDone)
		w.healthDone = nil
	}
	if h := w.h; h != nil {
		w.h = nil
		go end(h)
	}
}

// ReapOrphanLaunches makes sure a worker process whose launch finished after
// its actor had stopped is killed: such a launched message can only land in
// protoactor's dead letters.
func ReapOrphanLaunches(system *actor.ActorSystem) {
	system.EventStream.Subscribe(func(evt any) {
		if dl, ok := evt.(*actor.DeadLetterEvent); ok {
			if m, ok := dl.Message.(*launched); ok {
				go m.h.Kill()
			}
		}
	})
}
