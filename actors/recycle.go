package actors

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/snakepit-go/snakepit/supervision"
	"github.com/snakepit-go/snakepit/telemetry"
)

// Recycling requests the runtime sends to a pool actor.
type (
	// RecycleWorker replaces one worker gracefully (reason "manual"); it is
	// answered with *RecycleDone once the old worker has stopped.
	RecycleWorker struct{ ID string }
	// RecycleAll replaces every worker of the pool, MaxConcurrent at a time
	// (a rolling restart); answered with *RecycleDone when all are replaced.
	RecycleAll struct{}
	// RecycleDone answers RecycleWorker and RecycleAll.
	RecycleDone struct{ Err error }
)

// Errors of the pool's requests (the root package re-exports them).
var (
	// ErrUnknownWorker: no worker of that id in the pool.
	ErrUnknownWorker = errors.New("unknown worker")
	// ErrPoolUnavailable: the pool has failed or is stopping.
	ErrPoolUnavailable = errors.New("pool unavailable")
)

// recycleJob is one worker to replace, and who waits for it.
type recycleJob struct {
	target  *worker
	verdict supervision.Verdict
	groups  []*recycleGroup
}

// recycleGroup is one manual request, answered when all its jobs are done.
type recycleGroup struct {
	replyTo *actor.PID
	left    int
	errs    []error
}

// killWorker tells a worker actor to kill its process at once.
type killWorker struct {
	gen    uint64
	detail string
}

// drainTimedOut: a retiring worker's drain timeout has passed.
type drainTimedOut struct{ worker *actor.PID }

// member reports whether w counts towards the pool's size: neither a
// replacement still starting nor a worker being retired.
func (w *worker) member() bool { return !w.retiring && w.replaces == nil }

func (p *poolActor) onRecycleWorker(ctx actor.Context, m *RecycleWorker) {
	if err := p.recycleRefused(); err != nil {
		ctx.Respond(&RecycleDone{Err: err})
		return
	}
	w := p.memberBySlot(m.ID)
	if w == nil {
		ctx.Respond(&RecycleDone{Err: fmt.Errorf("%w %q in pool %q; its workers are: %s",
			ErrUnknownWorker, m.ID, p.s.Name, strings.Join(p.memberIDs(), ", "))})
		return
	}
	g := &recycleGroup{replyTo: ctx.Sender(), left: 1}
	p.enqueueRecycle(ctx, w, supervision.Verdict{Reason: supervision.RecycleManual, Detail: "asked for"}, g)
}

func (p *poolActor) onRecycleAll(ctx actor.Context) {
	if err := p.recycleRefused(); err != nil {
		ctx.Respond(&RecycleDone{Err: err})
		return
	}
	var members []*worker
	for _, w := range p.workers {
		if w.member() {
			members = append(members, w)
		}
	}
	g := &recycleGroup{replyTo: ctx.Sender(), left: len(members)}
	for _, w := range members {
		p.enqueueRecycle(ctx, w, supervision.Verdict{Reason: supervision.RecycleManual, Detail: "rolling restart"}, g)
	}
}

func (p *poolActor) recycleRefused() error {
	switch {
	case p.failed != "":
		return fmt.Errorf("%w: pool %q has failed: %s", ErrPoolUnavailable, p.s.Name, p.failed)
	case p.draining || p.stopping:
		return fmt.Errorf("%w: pool %q is stopping", ErrPoolUnavailable, p.s.Name)
	}
	return nil
}

// onLifecycleQuery answers the lifecycle actor with every ready worker.
func (p *poolActor) onLifecycleQuery(ctx actor.Context) {
	facts := &lifecycleFacts{}
	for _, w := range p.workers {
		if w.ready {
			facts.workers = append(facts.workers, workerFacts{id: w.pid.Id, pid: w.osPid, facts: supervision.WorkerFacts{
				Started: w.started, Requests: w.requests, Spread: w.spread}})
		}
	}
	ctx.Respond(facts)
}

// onLifecycleReport records sampled memory and recycles the workers due.
// A worker already on its way out only answers to the hard memory limit.
func (p *poolActor) onLifecycleReport(ctx actor.Context, r *lifecycleReport) {
	for id, rss := range r.rss {
		// Not once a retired worker was told to stop: its process frees
		// memory as it shuts down, and the recycle reports the figure
		// from before.
		if w := p.byID[id]; w != nil && !w.stopSent {
			w.rss = rss
		}
	}
	if p.recycleRefused() != nil {
		return
	}
	for _, d := range r.due {
		w := p.byID[d.id]
		if w == nil || !w.ready || (!d.verdict.Reason.Graceful() && w.killedFor != nil) {
			continue
		}
		if d.verdict.Reason.Graceful() && (!w.member() || w.job != nil || p.isPending(w)) {
			continue
		}
		p.enqueueRecycle(ctx, w, d.verdict, nil)
	}
}

// enqueueRecycle queues w's replacement, or kills it at once for the hard
// memory limit. A worker already queued or being replaced takes g along.
func (p *poolActor) enqueueRecycle(ctx actor.Context, w *worker, v supervision.Verdict, g *recycleGroup) {
	if !v.Reason.Graceful() {
		p.killForRecycle(ctx, w, v)
		return
	}
	if job := p.jobFor(w); job != nil {
		if g != nil {
			job.groups = append(job.groups, g)
		}
		return
	}
	job := &recycleJob{target: w, verdict: v}
	if g != nil {
		job.groups = append(job.groups, g)
	}
	p.pending = append(p.pending, job)
	p.startRecycles(ctx)
}

func (p *poolActor) jobFor(w *worker) *recycleJob {
	if w.job != nil {
		return w.job
	}
	for _, j := range p.pending {
		if j.target == w {
			return j
		}
	}
	return nil
}

func (p *poolActor) isPending(w *worker) bool { return w.job == nil && p.jobFor(w) != nil }

// startRecycles begins queued replacements while fewer than MaxConcurrent
// are under way.
func (p *poolActor) startRecycles(ctx actor.Context) {
	for p.recycling < p.policy.MaxConcurrent && len(p.pending) > 0 {
		job := p.pending[0]
		p.pending = p.pending[1:]
		if _, alive := p.byID[job.target.pid.Id]; !alive || !job.target.member() {
			p.finishJob(ctx, job, nil) // gone or replaced meanwhile
			continue
		}
		nw := p.spawnWorker(ctx, job.target.index)
		nw.replaces = job.target
		job.target.job = job
		p.recycling++
		p.s.Logger.Info("recycling worker", "worker", job.target.slot.id, "reason", job.verdict.Reason,
			"detail", job.verdict.Detail, "replacement", nw.slot.id)
	}
}

// promoteReplacement runs when a replacement is ready: it takes the old
// worker's place, and the old one takes no new call and stops once idle.
func (p *poolActor) promoteReplacement(ctx actor.Context, nw *worker) {
	old := nw.replaces
	nw.replaces = nil
	old.retiring = true
	old.successor = nw.slot.id
	for i, w := range p.workers {
		if w == old {
			p.workers[i] = nw
		} else if w == nw {
			p.workers[i] = old
		}
	}
	self := ctx.Self()
	system := ctx.ActorSystem()
	p.timers["drain:"+old.pid.Id] = time.AfterFunc(p.policy.DrainTimeout, func() {
		system.Root.Send(self, &drainTimedOut{worker: old.pid})
	})
	p.retiringWithSessions(ctx, old)
	p.retireIfIdle(ctx, old)
}

func (p *poolActor) retireIfIdle(ctx actor.Context, w *worker) {
	if w.retiring && w.load == 0 && w.sessions == 0 && w.ending == 0 && !w.stopSent {
		p.stopRetired(ctx, w)
	}
}

// stopRetired has a retired worker stop its process; its Terminated, which
// finishes the recycle, comes once that process has exited.
func (p *poolActor) stopRetired(ctx actor.Context, w *worker) {
	w.stopSent = true
	ctx.Send(w.pid, &retire{})
}

func (p *poolActor) onDrainTimedOut(ctx actor.Context, m *drainTimedOut) {
	delete(p.timers, "drain:"+m.worker.Id)
	if w := p.byID[m.worker.Id]; w != nil && w.retiring && !w.stopSent && w.sessions == 0 {
		p.s.Logger.Warn("recycled worker did not finish its calls within the drain timeout; stopping it",
			"worker", w.slot.id, "in_flight", w.load, "drain_timeout", p.policy.DrainTimeout)
		p.stopRetired(ctx, w)
	}
}

// onTerminated removes a worker that was retired, or a replacement that
// failed to start.
func (p *poolActor) onTerminated(ctx actor.Context, who *actor.PID) {
	w := p.byID[who.Id]
	if w == nil {
		return
	}
	publish(p.s.Events, telemetry.WorkerStopped{Time: time.Now(), Pool: p.s.Name, Worker: w.slot.id, Reason: p.stopReason(w)})
	if p.failed != "" {
		return
	}
	switch {
	case w.retiring:
		p.removeWorker(w)
		v := w.job.verdict
		if w.killedFor != nil { // killed over the hard limit while draining
			v = *w.killedFor
		}
		p.recorded(w, v, w.successor)
		p.recycling--
		p.finishJob(ctx, w.job, nil)
	case w.replaces != nil:
		old := w.replaces
		p.removeWorker(w)
		p.recycling--
		job := old.job
		old.job = nil
		p.haltRollouts(ctx, job)
		p.finishJob(ctx, job, fmt.Errorf("the replacement for worker %s did not start: %w", old.slot.id, w.startErr))
	case w.letGo:
		p.removeWorker(w)
		if p.readyCount() == 0 && len(p.memberIDs()) == 0 {
			p.fail(ctx, fmt.Errorf("every worker has exited and none is restarted (PoolConfig.Restart.Type %q)", p.sup.Type()))
		}
		return
	default:
		return
	}
	p.startRecycles(ctx)
}

// stopReason says why w's actor ended, for telemetry.WorkerStopped.
func (p *poolActor) stopReason(w *worker) string {
	switch {
	case w.retiring:
		return "recycled"
	case w.replaces != nil:
		return "replacement did not start"
	case w.letGo:
		return "not restarted"
	case p.failed != "":
		return "pool failed"
	}
	return "stop"
}

func (p *poolActor) removeWorker(w *worker) {
	for _, key := range []string{"drain:" + w.pid.Id, "sessions:" + w.pid.Id} {
		if t := p.timers[key]; t != nil {
			t.Stop()
			delete(p.timers, key)
		}
	}
	delete(p.byID, w.pid.Id)
	p.sup.Forget(w.slot.id)
	for i, o := range p.workers {
		if o == w {
			p.workers = append(p.workers[:i], p.workers[i+1:]...)
			break
		}
	}
}

// recorded counts a recycle and publishes its event.
func (p *poolActor) recorded(w *worker, v supervision.Verdict, replacement string) {
	p.recycles[v.Reason]++
	now := p.now()
	p.s.Logger.Info("worker recycled", "worker", w.slot.id, "reason", v.Reason, "detail", v.Detail,
		"uptime", now.Sub(w.started).Round(time.Millisecond), "requests", w.requests, "rss", w.rss)
	if p.s.Events != nil {
		p.s.Events.Publish(telemetry.WorkerRecycled{Time: now, Pool: p.s.Name, Worker: w.slot.id, Replacement: replacement,
			Reason: string(v.Reason), Detail: v.Detail, Uptime: now.Sub(w.started), Requests: w.requests, RSS: w.rss})
	}
}

func (p *poolActor) finishJob(ctx actor.Context, job *recycleJob, err error) {
	if job == nil {
		return
	}
	for _, g := range job.groups {
		g.left--
		if err != nil {
			g.errs = append(g.errs, err)
		}
		if g.left == 0 {
			ctx.Send(g.replyTo, &RecycleDone{Err: errors.Join(g.errs...)})
		}
	}
	job.groups = nil
}

// haltRollouts drops the queued recycles of every manual request that failed
// job belongs to: a rolling restart stops at its first replacement that
// cannot start (new code that does not import), leaving the other workers on
// the code that works.
func (p *poolActor) haltRollouts(ctx actor.Context, failed *recycleJob) {
	if len(failed.groups) == 0 {
		return
	}
	keep := p.pending[:0]
	for _, j := range p.pending {
		if sharesGroup(j, failed) {
			p.finishJob(ctx, j, fmt.Errorf("worker %s not recycled: the rolling restart stopped at its first failed replacement", j.target.slot.id))
			continue
		}
		keep = append(keep, j)
	}
	p.pending = keep
}

func sharesGroup(a, b *recycleJob) bool {
	for _, g := range a.groups {
		for _, h := range b.groups {
			if g == h {
				return true
			}
		}
	}
	return false
}

// abandonRecycles answers every manual request still waiting with err.
func (p *poolActor) abandonRecycles(ctx actor.Context, err error) {
	for _, j := range p.pending {
		p.finishJob(ctx, j, err)
	}
	p.pending = nil
	for _, w := range p.workers {
		p.finishJob(ctx, w.job, err)
	}
}

// killForRecycle kills w at once (hard memory limit); its restart does not
// count against the restart intensity.
func (p *poolActor) killForRecycle(ctx actor.Context, w *worker, v supervision.Verdict) {
	p.s.Logger.Warn("killing worker over its hard memory limit", "worker", w.slot.id, "detail", v.Detail)
	vv := v
	w.killedFor = &vv
	ctx.Send(w.pid, &killWorker{gen: w.gen, detail: v.Detail})
}

func (p *poolActor) memberBySlot(id string) *worker {
	for _, w := range p.workers {
		if w.member() && w.slot.id == id {
			return w
		}
	}
	return nil
}

func (p *poolActor) memberIDs() []string {
	var ids []string
	for _, w := range p.workers {
		if w.member() {
			ids = append(ids, w.slot.id)
		}
	}
	return ids
}

// onGILSwitchedOn moves a pool that "auto" put on the thread profile to the
// process profile once one of its workers reports its GIL switched on: the
// threads would only take turns. New workers start as processes (capacity
// 1); the running ones are replaced one by one, as in a rolling restart.
func (p *poolActor) onGILSwitchedOn(ctx actor.Context, m *gilSwitchedOn) {
	if !p.s.AutoFallback || p.s.Profile != "thread" || p.recycleRefused() != nil {
		return
	}
	ws := *p.workerSettings
	ws.Spec.Capacity, ws.Spec.Profile = 1, "process"
	p.workerSettings, p.s.Profile = &ws, "process"
	why := fmt.Sprintf("profile auto falls back to processes: module %s switched the GIL on (%s)", orUnnamed(m.by), m.when)
	p.s.Logger.Warn("switching the pool to the process profile", "why", why)
	for _, w := range p.workers {
		if w.member() {
			p.enqueueRecycle(ctx, w, supervision.Verdict{Reason: supervision.RecycleProfile, Detail: why}, nil)
		}
	}
}

func orUnnamed(module string) string {
	if module == "" {
		return "(unnamed)"
	}
	return module
}
