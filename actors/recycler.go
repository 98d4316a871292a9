package actors

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/snakepit-go/snakepit/supervision"
	"github.com/snakepit-go/snakepit/telemetry"
)

// recycler is the pool's graceful recycles: those waiting for a turn, how
// many are under way (at most MaxConcurrent), and those done by reason. A
// recycle starts a replacement first; once it is ready the old worker
// retires (takes no new call), drains its calls and sessions, and stops.
// Its methods decide; the pool's handlers below act.
type recycler struct {
	policy   supervision.RecyclePolicy
	pending  []*recycleJob
	underWay int
	done     map[supervision.RecycleReason]int64
}

func newRecycler(policy supervision.RecyclePolicy) recycler {
	return recycler{policy: policy, done: map[supervision.RecycleReason]int64{}}
}

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

// recycleState is what recycling keeps about one worker.
type recycleState struct {
	// replaces: this worker is the replacement of that one, until it is
	// ready; then the old one is retiring (no new calls) until it stops,
	// and successor names its replacement.
	replaces  *worker
	retiring  bool
	successor string
	stopSent  bool                 // told to stop its process (retire)
	job       *recycleJob          // the recycle replacing this worker
	killedFor *supervision.Verdict // killed at once for this (hard memory limit)
	startErr  error                // why this replacement did not start
}

// Messages the pool sends itself about recycles.
type drainTimedOut struct{ worker *actor.PID } // a retiring worker's drain timeout passed

// jobFor is the recycle of w under way or waiting, or nil.
func (r *recycler) jobFor(w *worker) *recycleJob {
	if w.recycle.job != nil {
		return w.recycle.job
	}
	for _, j := range r.pending {
		if j.target == w {
			return j
		}
	}
	return nil
}

func (r *recycler) isPending(w *worker) bool { return w.recycle.job == nil && r.jobFor(w) != nil }

// add queues w's recycle for g (nil: a scheduled one); a worker already
// queued or being replaced takes g along instead. It reports whether the
// job is new.
func (r *recycler) add(w *worker, v supervision.Verdict, g *recycleGroup) bool {
	job := r.jobFor(w)
	isNew := job == nil
	if isNew {
		job = &recycleJob{target: w, verdict: v}
		r.pending = append(r.pending, job)
	}
	if g != nil {
		job.groups = append(job.groups, g)
	}
	return isNew
}

// next takes the next waiting job if fewer than MaxConcurrent are under
// way, or returns nil.
func (r *recycler) next() *recycleJob {
	if r.underWay >= r.policy.MaxConcurrent || len(r.pending) == 0 {
		return nil
	}
	job := r.pending[0]
	r.pending = r.pending[1:]
	return job
}

// halt takes out the waiting jobs of every manual request the failed job
// belongs to: a rolling restart stops at its first replacement that cannot
// start (new code that does not import), leaving the other workers on the
// code that works.
func (r *recycler) halt(failed *recycleJob) []*recycleJob {
	if len(failed.groups) == 0 {
		return nil
	}
	var halted []*recycleJob
	r.pending = slices.DeleteFunc(r.pending, func(j *recycleJob) bool {
		if sharesGroup(j, failed) {
			halted = append(halted, j)
			return true
		}
		return false
	})
	return halted
}

func sharesGroup(a, b *recycleJob) bool {
	for _, g := range a.groups {
		if slices.Contains(b.groups, g) {
			return true
		}
	}
	return false
}

// finish ends job with err (nil: done) and returns its groups now complete.
func (j *recycleJob) finish(err error) []*recycleGroup {
	var complete []*recycleGroup
	for _, g := range j.groups {
		g.left--
		if err != nil {
			g.errs = append(g.errs, err)
		}
		if g.left == 0 {
			complete = append(complete, g)
		}
	}
	j.groups = nil
	return complete
}

// counts are the recycles done by reason, for PoolHealth.Recycles.
func (r *recycler) counts() map[string]int64 {
	out := make(map[string]int64, len(r.done))
	for reason, n := range r.done {
		out[string(reason)] = n
	}
	return out
}

func (p *poolActor) onRecycleWorker(ctx actor.Context, m *RecycleWorker) {
	if err := p.recycleRefused(); err != nil {
		ctx.Respond(&RecycleDone{Err: err})
		return
	}
	w := p.workers.memberBySlot(m.ID)
	if w == nil {
		ctx.Respond(&RecycleDone{Err: fmt.Errorf("%w %q in pool %q; its workers are: %s",
			ErrUnknownWorker, m.ID, p.s.Name, strings.Join(p.workers.memberIDs(), ", "))})
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
	members := p.workers.members()
	g := &recycleGroup{replyTo: ctx.Sender(), left: len(members)}
	for _, w := range members {
		p.enqueueRecycle(ctx, w, supervision.Verdict{Reason: supervision.RecycleManual, Detail: "rolling restart"}, g)
	}
}

func (p *poolActor) recycleRefused() error {
	switch {
	case p.failErr != nil:
		return poolFailedError(p.s.Name, p.failReason())
	case p.draining || p.stopping:
		return poolStoppingError(p.s.Name)
	}
	return nil
}

// onLifecycleQuery answers the lifecycle actor with every ready worker.
func (p *poolActor) onLifecycleQuery(ctx actor.Context) {
	facts := &lifecycleFacts{}
	for _, w := range p.workers.list {
		if w.ready {
			facts.workers = append(facts.workers, workerFacts{id: w.pid.Id, pid: w.osPid, facts: supervision.WorkerFacts{
				Started: w.usage.started, Requests: w.usage.requests, Spread: w.spread}})
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
		if w := p.workers.byID[id]; w != nil && !w.recycle.stopSent {
			w.usage.rss = rss
		}
	}
	if p.recycleRefused() != nil {
		return
	}
	for _, d := range r.due {
		if w := p.workers.byID[d.id]; w != nil && p.dueNow(w, d.verdict) {
			p.enqueueRecycle(ctx, w, d.verdict, nil)
		}
	}
}

// dueNow reports whether a scheduled recycle of w for v is still to do.
func (p *poolActor) dueNow(w *worker, v supervision.Verdict) bool {
	switch {
	case !w.ready:
		return false
	case !v.Reason.Graceful():
		return w.recycle.killedFor == nil
	}
	return w.member() && w.recycle.job == nil && !p.recycler.isPending(w)
}

// enqueueRecycle queues w's replacement, or kills it at once for the hard
// memory limit. A worker already queued or being replaced takes g along.
func (p *poolActor) enqueueRecycle(ctx actor.Context, w *worker, v supervision.Verdict, g *recycleGroup) {
	if !v.Reason.Graceful() {
		p.killForRecycle(ctx, w, v)
		return
	}
	if p.recycler.add(w, v, g) {
		p.startRecycles(ctx)
	}
}

// startRecycles begins waiting replacements while fewer than MaxConcurrent
// are under way.
func (p *poolActor) startRecycles(ctx actor.Context) {
	for job := p.recycler.next(); job != nil; job = p.recycler.next() {
		if p.workers.get(job.target.pid) == nil || !job.target.member() {
			p.finishJob(ctx, job, nil) // gone or replaced meanwhile
			continue
		}
		nw := p.spawnWorker(ctx, job.target.index)
		nw.recycle.replaces = job.target
		job.target.recycle.job = job
		p.recycler.underWay++
		p.s.Logger.Info("recycling worker", "worker", job.target.slot.id, "reason", job.verdict.Reason,
			"detail", job.verdict.Detail, "replacement", nw.slot.id)
	}
}

// promoteReplacement runs when a replacement is ready: it takes the old
// worker's place, and the old one takes no new call and stops once idle.
func (p *poolActor) promoteReplacement(ctx actor.Context, nw *worker) {
	old := nw.recycle.replaces
	nw.recycle.replaces = nil
	old.recycle.retiring = true
	old.recycle.successor = nw.slot.id
	p.workers.swap(old, nw)
	p.timers.after(ctx.ActorSystem(), ctx.Self(), drainKey(old.pid), p.recycler.policy.DrainTimeout, &drainTimedOut{worker: old.pid})
	p.retiringWithSessions(ctx, old)
	p.retireIfIdle(ctx, old)
}

func (p *poolActor) retireIfIdle(ctx actor.Context, w *worker) {
	if w.recycle.retiring && w.load == 0 && w.sessions == (sessionLoad{}) && !w.recycle.stopSent {
		p.stopRetired(ctx, w)
	}
}

// stopRetired has a retired worker stop its process; its Terminated, which
// finishes the recycle, comes once that process has exited.
func (p *poolActor) stopRetired(ctx actor.Context, w *worker) {
	w.recycle.stopSent = true
	ctx.Send(w.pid, &retire{})
}

func (p *poolActor) onDrainTimedOut(ctx actor.Context, m *drainTimedOut) {
	p.timers.fired(drainKey(m.worker))
	if w := p.workers.get(m.worker); w != nil && w.recycle.retiring && !w.recycle.stopSent && w.sessions.bound == 0 {
		p.s.Logger.Warn("recycled worker did not finish its calls within the drain timeout; stopping it",
			"worker", w.slot.id, "in_flight", w.load, "drain_timeout", p.recycler.policy.DrainTimeout)
		p.stopRetired(ctx, w)
	}
}

// retired finishes the recycle of w, whose actor (and process) has stopped.
func (p *poolActor) retired(ctx actor.Context, w *worker) {
	v := w.recycle.job.verdict
	if w.recycle.killedFor != nil { // killed over the hard limit while draining
		v = *w.recycle.killedFor
	}
	p.recorded(w, v, w.recycle.successor)
	p.recycler.underWay--
	p.finishJob(ctx, w.recycle.job, nil)
	p.startRecycles(ctx)
}

// replacementFailed drops a replacement that did not start: the worker it
// was to replace serves on, and the rolling restarts it belongs to stop.
func (p *poolActor) replacementFailed(ctx actor.Context, nw *worker) {
	old := nw.recycle.replaces
	p.recycler.underWay--
	job := old.recycle.job
	old.recycle.job = nil
	for _, j := range p.recycler.halt(job) {
		p.finishJob(ctx, j, fmt.Errorf("worker %s not recycled: the rolling restart stopped at its first failed replacement", j.target.slot.id))
	}
	p.finishJob(ctx, job, fmt.Errorf("the replacement for worker %s did not start: %w", old.slot.id, nw.recycle.startErr))
	p.startRecycles(ctx)
}

// recorded counts a recycle and publishes its event.
func (p *poolActor) recorded(w *worker, v supervision.Verdict, replacement string) {
	p.recycler.done[v.Reason]++
	now, u := p.now(), &w.usage
	p.s.Logger.Info("worker recycled", "worker", w.slot.id, "reason", v.Reason, "detail", v.Detail,
		"uptime", now.Sub(u.started).Round(time.Millisecond), "requests", u.requests, "rss", u.rss)
	if p.s.Events != nil {
		p.s.Events.Publish(telemetry.WorkerRecycled{Time: time.Now(), Pool: p.s.Name, Worker: w.slot.id, Replacement: replacement,
			Reason: string(v.Reason), Detail: v.Detail, Uptime: now.Sub(u.started), Requests: u.requests, RSS: u.rss})
	}
}

// finishJob ends job and answers the manual requests it completes.
func (p *poolActor) finishJob(ctx actor.Context, job *recycleJob, err error) {
	if job == nil {
		return
	}
	for _, g := range job.finish(err) {
		ctx.Send(g.replyTo, &RecycleDone{Err: errors.Join(g.errs...)})
	}
}

// abandonRecycles answers every manual request still waiting with err.
func (p *poolActor) abandonRecycles(ctx actor.Context, err error) {
	for _, j := range p.recycler.pending {
		p.finishJob(ctx, j, err)
	}
	p.recycler.pending = nil
	for _, w := range p.workers.list {
		p.finishJob(ctx, w.recycle.job, err)
	}
}

// killForRecycle kills w at once (hard memory limit); its restart does not
// count against the restart intensity.
func (p *poolActor) killForRecycle(ctx actor.Context, w *worker, v supervision.Verdict) {
	p.s.Logger.Warn("killing worker over its hard memory limit", "worker", w.slot.id, "detail", v.Detail)
	w.recycle.killedFor = &v
	ctx.Send(w.pid, &killWorker{gen: w.gen, detail: v.Detail})
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
	why := fmt.Sprintf("profile auto falls back to processes: module %s switched the GIL on (%s)", orText(m.by, "(unnamed)"), m.when)
	p.s.Logger.Warn("switching the pool to the process profile", "why", why)
	for _, w := range p.workers.members() {
		p.enqueueRecycle(ctx, w, supervision.Verdict{Reason: supervision.RecycleProfile, Detail: why}, nil)
	}
}
