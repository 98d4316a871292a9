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
	"github.com/snakepit-go/snakepit/telemetry"
)

// workerSlot is the part of a worker that survives its restarts.
type workerSlot struct {
	id       string
	gen      atomic.Uint64
	settings *WorkerSettings
	log      hclog.Logger
}

// workerActor owns one Python process and its connection. Its calls run on
// its runners (runner.go); its watchdog (watchdog.go) finds a process that
// is stuck or frozen.
type workerActor struct {
	slot       *workerSlot
	gen        uint64
	h          *pyworker.Handle
	cancel     context.CancelFunc // ends a launch in progress
	launchedAt time.Time
	inflight   map[string]context.CancelFunc
	run        *runner  // this incarnation's call context
	jobs       chan job // feeds its runners; closed when the process is let go
	stopping   bool
	killedBy   string // why the runtime killed the process, if it did
	wd         watchdog
}

// Messages a worker actor sends itself from its goroutines.
type (
	launched struct {
		gen     uint64
		h       *pyworker.Handle
		bootCPU time.Duration // CPU the process used to become ready
	}
	launchFailed struct {
		gen uint64
		err error
	}
	processExited struct {
		gen    uint64
		status pyworker.ExitStatus
		stderr string // its last stderr lines
	}
	transportBroken struct {
		gen uint64
		err string
	}
	callDone struct{ id string }
	// processGone: a retired worker's process has exited and been reaped.
	processGone struct{}
)

func newWorkerProps(slot *workerSlot) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &workerActor{slot: slot, inflight: map[string]context.CancelFunc{}, wd: newWatchdog(slot.settings)}
	}, actor.WithDispatcher(inlineDispatcher))
}

func (w *workerActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *dispatch:
		w.execute(ctx, m)
	case *callDone:
		delete(w.inflight, m.id)
	case *apb.CancelCall:
		if cancel, ok := w.inflight[m.GetRequestId()]; ok {
			cancel()
		}
	case *DescribeQuery, *StatsQuery:
		w.answerQuery(ctx, m)
	case *endSession:
		w.onEndSession(ctx, m)
	default:
		if !w.receiveWatchdog(ctx, m) {
			w.receiveLifecycle(ctx, m)
		}
	}
}

// receiveLifecycle handles the start, death and stop of the process.
func (w *workerActor) receiveLifecycle(ctx actor.Context, msg any) {
	switch m := msg.(type) {
	case *actor.Started:
		w.launch(ctx)
	case *launched:
		w.onLaunched(ctx, m)
	case *launchFailed:
		w.onLaunchFailed(m)
	case *processExited:
		w.onExit(ctx, m)
	case *transportBroken:
		w.onTransportBroken(m)
	case *killWorker:
		w.onKill(m)
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
	s := w.slot.settings
	publish(s.Events, telemetry.WorkerStarted{Time: w.launchedAt, Pool: s.Pool, Worker: w.slot.id})
	spec := s.Spec
	spec.ID, spec.Logger = w.slot.id, w.slot.log
	spec.Callbacks = withOrigin(spec.Callbacks, w.slot.id)
	lctx, cancel := context.WithTimeout(context.Background(), s.StartTimeout)
	w.cancel = cancel
	self, root, gen, start := ctx.Self(), ctx.ActorSystem().Root, w.gen, s.launcher()
	go func() {
		h, err := start(lctx, spec)
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
	capacity := w.slot.settings.Spec.Capacity
	w.startRunners(ctx, capacity)
	w.startHealthChecks(ctx)
	w.noticeGIL(ctx, m.h.Health)
	ctx.Send(ctx.Parent(), &workerReady{worker: self, gen: w.gen, capacity: capacity, pid: m.h.Pid(),
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
// surviving. A call this incarnation cannot run goes back to the pool.
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
	w.wd.stop()
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
