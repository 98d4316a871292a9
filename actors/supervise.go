package actors

import (
	"fmt"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/snakepit-go/snakepit/supervision"
	"github.com/snakepit-go/snakepit/telemetry"
)

// restartState is what the pool's supervision keeps about one worker.
type restartState struct {
	count    int           // restarts since the runtime started
	backoff  time.Duration // the last restart's backoff
	inPeriod int           // the pool's restarts within the period, at the last one
	lastExit string        // how its last process ended
	letGo    bool          // its restart type says it is not restarted
}

// restartDue: a worker's restart backoff has passed.
type restartDue struct{ child *actor.PID }

// HandleFailure makes the pool actor its workers' supervisor strategy
// (protoactor uses an actor's own HandleFailure when it has one). It runs on
// the pool's mailbox, like Receive, and never waits: a restart after a
// backoff is scheduled on a timer.
func (p *poolActor) HandleFailure(system *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason any, _ any) {
	w := p.workers.get(child)
	if w == nil || p.failErr != nil {
		sup.StopChildren(child)
		return
	}
	w.ready = false
	p.publishCrash(w, reason)
	if p.recycleFailure(sup, child, w, reason) {
		return
	}
	switch r := reason.(type) {
	case *bootFailed:
		p.s.Logger.Error("worker cannot boot; not restarting it", "worker", w.slot.id, "error", r.err)
		publish(p.s.Events, telemetry.BootFailed{Time: time.Now(), Pool: p.s.Name, Worker: w.slot.id, Error: r.err.Error()})
		system.Root.Send(p.self(sup), &poolFailed{err: r.err})
		return
	case *crashed:
		p.s.Logger.Warn("worker crashed", "worker", w.slot.id, "status", r.status.String())
	case *launchError:
		p.s.Logger.Warn("worker did not start", "worker", w.slot.id, "error", r.err)
	default:
		p.s.Logger.Error("worker actor failed", "worker", w.slot.id, "reason", fmt.Sprint(reason))
	}
	p.decideRestart(system, sup, child, w, reason)
}

// decideRestart restarts a failed worker after its backoff, lets it go, or
// fails the pool (restart intensity exceeded).
func (p *poolActor) decideRestart(system *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, w *worker, reason any) {
	exit := exitOf(reason)
	w.restart.lastExit = exit.String()
	d := p.sup.Decide(w.slot.id, exit)
	switch {
	case d.Escalate:
		publish(p.s.Events, telemetry.RestartIntensityExceeded{Time: time.Now(), Pool: p.s.Name, Restarts: d.Restarts,
			Period: p.sup.Period(), LastExit: exit.String()})
		system.Root.Send(p.self(sup), &poolFailed{err: fmt.Errorf("%s; last failure of %s: %w", d.Reason, w.slot.id, reasonError(reason))})
		return
	case !d.Restart:
		p.s.Logger.Warn("worker not restarted", "worker", w.slot.id, "why", d.Reason)
		w.restart.letGo = true
		sup.StopChildren(child)
		return
	}
	w.restart.count++
	p.restarts++
	w.restart.backoff, w.restart.inPeriod = d.Delay, d.Restarts
	p.s.Logger.Info("restarting worker", "worker", w.slot.id, "backoff", d.Delay, "restarts_in_period", d.Restarts)
	p.timers.after(system, p.self(sup), restartKey(child), d.Delay, &restartDue{child: child})
}

// publishCrash publishes the death of w's process, unless it was killed
// over its hard memory limit: that is a recycle, told as one.
func (p *poolActor) publishCrash(w *worker, reason any) {
	c, ok := reason.(*crashed)
	if !ok || w.recycle.killedFor != nil || p.s.Events == nil {
		return
	}
	e := telemetry.WorkerCrashed{Time: time.Now(), Pool: p.s.Name, Worker: w.slot.id, Pid: w.osPid, ExitCode: c.status.Code,
		Signal: int(c.status.Signal), KilledBy: c.killedBy, Exit: exitOf(reason).String(), OOM: oomText(c),
		Stderr: c.stderr, Stacks: c.stacks}
	if !w.usage.started.IsZero() {
		e.Uptime = p.now().Sub(w.usage.started)
	}
	p.s.Events.Publish(e)
}

// oomText says what is known of an out-of-memory kill, for a SIGKILL the
// runtime did not send.
func oomText(c *crashed) string {
	switch {
	case c.status.Signal != syscall.SIGKILL || c.killedBy != "":
		return ""
	case !c.status.OOM.Known:
		return "unknown: " + c.status.OOM.Detail
	case c.status.OOM.Killed:
		return "yes: " + c.status.OOM.Detail
	}
	return "no: " + c.status.OOM.Detail
}

// recycleFailure handles the failures that belong to a recycle and never
// count against the restart intensity: a worker killed over its hard memory
// limit restarts at once; a retiring worker is let go; a replacement that
// cannot start is dropped and the worker it was to replace serves on.
func (p *poolActor) recycleFailure(sup actor.Supervisor, child *actor.PID, w *worker, reason any) bool {
	rs := &w.recycle
	switch {
	case rs.retiring:
		sup.StopChildren(child)
	case rs.replaces != nil:
		rs.startErr = reasonError(reason)
		p.s.Logger.Warn("replacement worker did not start; the worker it was to replace keeps serving",
			"worker", w.slot.id, "replacing", rs.replaces.slot.id, "error", exitOf(reason).String())
		sup.StopChildren(child)
	case rs.killedFor != nil:
		if _, ok := reason.(*crashed); !ok {
			return false
		}
		p.recorded(w, *rs.killedFor, "")
		rs.killedFor = nil
		sup.RestartChildren(child)
	default:
		return false
	}
	return true
}

// onRestartDue restarts a worker once its backoff has passed, unless the
// pool has failed or is stopping by then.
func (p *poolActor) onRestartDue(ctx actor.Context, m *restartDue) {
	p.timers.fired(restartKey(m.child))
	if p.failErr == nil && !p.stopping {
		if w := p.workers.get(m.child); w != nil {
			publish(p.s.Events, telemetry.WorkerRestarted{Time: time.Now(), Pool: p.s.Name, Worker: w.slot.id,
				Backoff: w.restart.backoff, Restarts: w.restart.inPeriod})
		}
		ctx.(actor.Supervisor).RestartChildren(m.child)
	}
}

// self finds the pool's own PID from the supervisor (its context).
func (p *poolActor) self(sup actor.Supervisor) *actor.PID {
	return sup.(actor.Context).Self()
}

// exitOf types a worker actor's failure reason.
func exitOf(reason any) supervision.Exit {
	switch r := reason.(type) {
	case *crashed:
		e := supervision.Exit{Kind: supervision.ExitCrashed, Code: r.status.Code, Signal: r.status.Signal, OOMKilled: r.status.OOM.Killed}
		if r.killedBy != "" {
			e.Kind, e.Why = supervision.ExitKilled, r.killedBy
		}
		return e
	case *bootFailed:
		return supervision.Exit{Kind: supervision.ExitBootFailed, Code: -1, Why: r.err.Error()}
	case *launchError: // did not start, for a reason that may pass
		return supervision.Exit{Kind: supervision.ExitBootFailed, Code: -1, Why: r.err.Error()}
	}
	return supervision.Exit{Kind: supervision.ExitCrashed, Code: -1, Why: fmt.Sprint(reason)}
}
