package actors

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	wpb "github.com/snakepit-go/snakepit/pyworker/pb"
	"github.com/snakepit-go/snakepit/supervision"
	"github.com/snakepit-go/snakepit/telemetry"
)

// The worker's watchdog: calls whose caller gave up keep their capacity
// until Python reports them ended, and a worker that keeps such a call past
// HangGrace, or fails HealthFailures health checks in a row, is killed and
// replaced. Every check runs in a goroutine; its result comes back as a
// message.

// probeEvery is how often a worker holding abandoned calls asks Python
// whether they ended.
const probeEvery = 20 * time.Millisecond

// stackWait bounds the wait for a stuck worker's stack dump.
const stackWait = 500 * time.Millisecond

// watchdog is a worker actor's watchdog state, for its current incarnation.
// Its methods decide; the worker actor's handlers below act.
type watchdog struct {
	policy      supervision.WatchdogPolicy
	clock       supervision.Clock // when a call was abandoned, and how long ago
	abandoned   map[string]abandonedCall
	probing     bool // a Stats probe is under way
	checking    bool // a health check is under way
	healthFails int  // health checks failed in a row
	healthDone  chan struct{}
	gil         gilState // what the worker last said about its GIL
}

func newWatchdog(s *WorkerSettings) watchdog {
	return watchdog{policy: s.Watchdog, clock: s.clock(), abandoned: map[string]abandonedCall{}}
}

// abandonedCall is a call answered to its caller but maybe still running.
type abandonedCall struct {
	tool  string
	since time.Time
}

// gilState is what a free-threaded worker last said about its GIL.
type gilState struct {
	on       bool
	by, when string
}

// Watchdog messages of a worker actor.
type (
	// callAbandoned: the caller gave up on call id (deadline or cancel).
	callAbandoned struct {
		gen      uint64
		id, tool string
	}
	probeDue       struct{ gen uint64 }
	inFlightSample struct {
		gen       uint64
		inFlight  int
		activeAt0 int
		err       error
	}
	healthTick    struct{ gen uint64 }
	healthChecked struct {
		gen   uint64
		reply *wpb.HealthReply
		err   error
	}
)

// abandon records that the caller of call id gave up on it now.
func (d *watchdog) abandon(id, tool string) {
	d.abandoned[id] = abandonedCall{tool: tool, since: d.clock.Now()}
}

// overdue is why the worker must be killed for an abandoned call Python
// has run past HangGrace, or "".
func (d *watchdog) overdue() string {
	now, grace := d.clock.Now(), d.policy.HangGrace
	for id, a := range d.abandoned {
		if stuck := now.Sub(a.since); stuck >= grace {
			return fmt.Sprintf("call %s of tool %q was still running %s after its caller gave up on it (PoolConfig.Watchdog.HangGrace %s)",
				id, a.tool, stuck.Round(time.Millisecond), grace)
		}
	}
	return ""
}

// healthFailed counts a failed health check; it reports whether the worker
// has now failed too many in a row.
func (d *watchdog) healthFailed() bool {
	d.healthFails++
	return d.healthFails >= d.policy.HealthFailures
}

// gilChanged reports a free-threaded worker's GIL newly switched on.
func (d *watchdog) gilChanged(h *wpb.HealthReply) (gilState, bool) {
	if !h.GetFreeThreadedBuild() || !h.GetGilEnabled() {
		return gilState{}, false
	}
	now := gilState{on: true, by: h.GetGilEnabledBy(), when: h.GetGilEnabledWhen()}
	if now == d.gil {
		return gilState{}, false
	}
	d.gil = now
	return now, true
}

func (d *watchdog) stop() {
	if d.healthDone != nil {
		close(d.healthDone)
		d.healthDone = nil
	}
}

// gaveUp reports whether a call ended because its caller gave up, or its
// deadline passed in Python: Python may still be running it.
func gaveUp(r *apb.CallReply) bool {
	switch r.GetFailure().GetCode() {
	case apb.Failure_CODE_DEADLINE, apb.Failure_CODE_CANCELLED:
		return true
	}
	switch r.GetReply().GetError().GetKind() {
	case wpb.ErrorInfo_KIND_DEADLINE_EXCEEDED, wpb.ErrorInfo_KIND_CANCELLED:
		return true
	}
	return false
}

// receiveWatchdog handles the watchdog's messages.
func (w *workerActor) receiveWatchdog(ctx actor.Context, msg any) bool {
	switch m := msg.(type) {
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
	default:
		return false
	}
	return true
}

// active counts the calls running on this worker that no caller gave up on.
func (w *workerActor) active() int {
	n := 0
	for id := range w.inflight {
		if _, gone := w.wd.abandoned[id]; !gone {
			n++
		}
	}
	return n
}

func (w *workerActor) onCallAbandoned(ctx actor.Context, m *callAbandoned) {
	if m.gen != w.gen || w.h == nil {
		ctx.Send(ctx.Parent(), &slotFreed{worker: ctx.Self(), gen: m.gen, id: m.id})
		return
	}
	w.wd.abandon(m.id, m.tool)
	w.probe(ctx)
}

// probe asks Python how many calls it runs, unless a probe is under way.
func (w *workerActor) probe(ctx actor.Context) {
	if w.wd.probing || len(w.wd.abandoned) == 0 || w.h == nil {
		return
	}
	w.wd.probing = true
	self, root, gen, conn, before := ctx.Self(), ctx.ActorSystem().Root, w.gen, w.h.Conn, w.active()
	timeout := w.wd.policy.HealthTimeout
	go func() {
		c, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		st, err := conn.Stats(c)
		root.Send(self, &inFlightSample{gen: gen, inFlight: int(st.GetInFlight()), activeAt0: before, err: err})
	}()
}

// onInFlightSample frees the slots of the abandoned calls once Python runs
// none of them, kills the worker once one is overdue, or probes again.
func (w *workerActor) onInFlightSample(ctx actor.Context, m *inFlightSample) {
	w.wd.probing = false
	if m.gen != w.gen || w.h == nil {
		return
	}
	if m.err == nil && supervision.Settled(m.inFlight, m.activeAt0, w.active()) {
		for id := range w.wd.abandoned {
			ctx.Send(ctx.Parent(), &slotFreed{worker: ctx.Self(), gen: w.gen, id: id})
		}
		clear(w.wd.abandoned)
		return
	}
	if why := w.wd.overdue(); why != "" {
		w.killStuck(why)
		return
	}
	sendAfter(ctx.ActorSystem(), ctx.Self(), probeEvery, &probeDue{gen: w.gen})
}

// startHealthChecks ticks this incarnation's health checks until done closes.
func (w *workerActor) startHealthChecks(ctx actor.Context) {
	w.wd.healthDone = tickSelf(ctx, w.wd.policy.HealthInterval, &healthTick{gen: w.gen})
}

func (w *workerActor) onHealthTick(ctx actor.Context, m *healthTick) {
	if m.gen != w.gen || w.h == nil || w.wd.checking || w.killedBy != "" {
		return
	}
	w.wd.checking = true
	self, root, gen, conn, timeout := ctx.Self(), ctx.ActorSystem().Root, w.gen, w.h.Conn, w.wd.policy.HealthTimeout
	go func() {
		c, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		h, err := conn.Health(c)
		if err == nil && !h.GetOk() {
			err = fmt.Errorf("the worker reports it is not ok")
		}
		root.Send(self, &healthChecked{gen: gen, reply: h, err: err})
	}()
}

func (w *workerActor) onHealthChecked(ctx actor.Context, m *healthChecked) {
	w.wd.checking = false
	if m.gen != w.gen || w.h == nil {
		return
	}
	if m.err == nil {
		w.wd.healthFails = 0
		w.noticeGIL(ctx, m.reply)
		return
	}
	over := w.wd.healthFailed()
	p := w.wd.policy
	w.slot.log.Warn("worker failed a health check", "pid", w.h.Pid(), "in_a_row", w.wd.healthFails, "of", p.HealthFailures, "error", m.err)
	if over {
		w.killStuck(fmt.Sprintf("it failed %d health checks in a row, each allowed %s (PoolConfig.Watchdog): %v",
			w.wd.healthFails, p.HealthTimeout, m.err))
	}
}

// kill kills the process at once, recording why; its exit then takes the
// crash path, carrying the reason.
func (w *workerActor) kill(why string) { w.killWith(why, false) }

// killStuck kills a worker that is stuck, after asking it for the Python
// stacks of its threads (bounded by stackWait: a frozen process is killed
// on time all the same); the stacks go with the crash to callers, the event
// and the log.
func (w *workerActor) killStuck(why string) { w.killWith(why, true) }

func (w *workerActor) killWith(why string, stacks bool) {
	if w.h == nil || w.killedBy != "" {
		return
	}
	// The pool routes no call here from now on, before anything else is
	// told: a call sent meanwhile goes back to it (execute, giveBack).
	w.killedBy = why
	w.run.killedBy.Store(&why)
	w.run.goingDown("it is being killed: " + why)
	w.slot.log.Warn("killing worker", "pid", w.h.Pid(), "why", why)
	h, run, log := w.h, w.run, w.slot.log
	go func() {
		if stacks {
			if dump := h.DumpStacks(stackWait); dump != "" {
				run.stacks.Store(&dump) // before the kill: onExit reads it after
				log.Warn("stacks of the stuck worker before it was killed", "pid", h.Pid(), "stacks", dump)
			} else {
				log.Warn("the stuck worker wrote no stacks before it was killed (frozen?)", "pid", h.Pid(), "waited", stackWait)
			}
		}
		h.Kill()
	}()
}

// noticeGIL publishes a free-threaded worker's GIL being switched on, once
// per change (at start, or by a module a tool imported later).
func (w *workerActor) noticeGIL(ctx actor.Context, h *wpb.HealthReply) {
	now, changed := w.wd.gilChanged(h)
	if !changed {
		return
	}
	w.slot.log.Warn("the GIL of this free-threaded worker was switched on", "module", now.by, "when", now.when,
		"fix", "the module must declare free-threading support (Py_mod_gil), or run the pool with Profile \"process\"")
	publish(w.slot.settings.Events, telemetry.GILEnabled{Time: time.Now(), Pool: w.slot.settings.Pool, Worker: w.slot.id,
		Module: now.by, When: now.when})
	ctx.Send(ctx.Parent(), &gilSwitchedOn{by: now.by, when: now.when})
}
