package actors

import (
	"fmt"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/snakepit-go/snakepit/supervision"
	"github.com/snakepit-go/snakepit/telemetry"
)

// worker is the pool's view of one worker: its place, the incarnation it
// routes to and that incarnation's load. What recycling, restarts and
// sessions keep about it lives in their own parts (recycler.go,
// supervise.go, sessions.go).
type worker struct {
	pid      *actor.PID
	slot     *workerSlot
	index    int     // its place in the pool, for the jitter spread
	spread   float64 // its share of the recycle jitter
	gen      uint64  // incarnation currently ready (0: none)
	ready    bool
	capacity int
	load     int
	osPid    int
	usage    workerUsage
	recycle  recycleState
	restart  restartState
	sessions sessionLoad
}

// workerUsage is what the pool measures of a worker's current process.
type workerUsage struct {
	started  time.Time // when it became ready (the pool's clock: its age)
	requests int64     // calls it served
	rss      uint64    // its last sampled RSS
	// atCapacity counts the dispatches that filled the worker to capacity.
	atCapacity int64
	// busy sums the time with at least one call running, since busySince
	// when it has one now; bootCPU is the CPU its process used to start.
	busy      time.Duration
	busySince time.Time
	bootCPU   time.Duration
}

func (w *worker) free() bool { return w.ready && !w.recycle.retiring && w.load < w.capacity }

// member reports whether w counts towards the pool's size: neither a
// replacement still starting nor a worker being retired.
func (w *worker) member() bool { return !w.recycle.retiring && w.recycle.replaces == nil }

// busyNow is the time w's process has had a call running, up to now.
func (w *worker) busyNow() time.Duration {
	if w.load > 0 && w.ready {
		return w.usage.busy + time.Since(w.usage.busySince)
	}
	return w.usage.busy
}

// took counts a call dispatched to w; it reports whether w is now full.
func (w *worker) took() bool {
	if w.load == 0 {
		w.usage.busySince = time.Now()
	}
	w.load++
	if w.load == w.capacity {
		w.usage.atCapacity++
		return true
	}
	return false
}

// finished counts a call of w's current incarnation done.
func (w *worker) finished() {
	if w.load > 0 {
		w.load--
		if w.load == 0 {
			w.usage.busy += time.Since(w.usage.busySince)
		}
	}
	w.usage.requests++
}

// becameReady starts the accounting of a new incarnation.
func (w *worker) becameReady(m *workerReady, now time.Time) {
	w.ready, w.gen, w.load, w.capacity, w.osPid = true, m.gen, 0, m.capacity, m.pid
	w.usage = workerUsage{started: now, bootCPU: m.bootCPU, atCapacity: w.usage.atCapacity}
	w.recycle.killedFor = nil
}

// wentDown takes w's incarnation out of routing.
func (w *worker) wentDown() {
	if w.load > 0 && w.ready {
		w.usage.busy += time.Since(w.usage.busySince)
	}
	w.ready, w.load = false, 0
}

// roster is the pool's workers: the Size members in order, then any worker
// retiring and any replacement starting.
type roster struct {
	list   []*worker
	byID   map[string]*worker // by actor PID id
	nextID int
	random func() float64 // for the jitter spread
}

func (r *roster) get(pid *actor.PID) *worker { return r.byID[pid.Id] }

func (r *roster) add(w *worker) {
	r.list = append(r.list, w)
	r.byID[w.pid.Id] = w
}

func (r *roster) remove(w *worker) {
	delete(r.byID, w.pid.Id)
	for i, o := range r.list {
		if o == w {
			r.list = append(r.list[:i], r.list[i+1:]...)
			return
		}
	}
}

// swap exchanges the places of a and b (a replacement takes its
// predecessor's).
func (r *roster) swap(a, b *worker) {
	for i, w := range r.list {
		switch w {
		case a:
			r.list[i] = b
		case b:
			r.list[i] = a
		}
	}
}

// leastLoadedFree is the worker with free capacity running the fewest
// calls (the first of them), or nil.
func (r *roster) leastLoadedFree() *worker {
	var best *worker
	for _, w := range r.list {
		if w.free() && (best == nil || w.load < best.load) {
			best = w
		}
	}
	return best
}

// readyCount counts the members that are ready.
func (r *roster) readyCount() int {
	n := 0
	for _, w := range r.list {
		if w.ready && w.member() {
			n++
		}
	}
	return n
}

// members are the workers that count towards the pool's size.
func (r *roster) members() []*worker {
	var out []*worker
	for _, w := range r.list {
		if w.member() {
			out = append(out, w)
		}
	}
	return out
}

func (r *roster) memberBySlot(id string) *worker {
	for _, w := range r.list {
		if w.member() && w.slot.id == id {
			return w
		}
	}
	return nil
}

func (r *roster) memberIDs() []string {
	var ids []string
	for _, w := range r.members() {
		ids = append(ids, w.slot.id)
	}
	return ids
}

func (r *roster) firstReady() *worker {
	for _, w := range r.list {
		if w.ready {
			return w
		}
	}
	return nil
}

// spawnWorker starts a worker for place index of the pool, with an id never
// used before in the pool ("<pool>-<n>").
func (p *poolActor) spawnWorker(ctx actor.Context, index int) *worker {
	id := p.s.Name + "-" + strconv.Itoa(p.workers.nextID)
	p.workers.nextID++
	slot := &workerSlot{id: id, settings: p.workerSettings, log: p.s.Logger.Named(id)}
	pid := ctx.Spawn(newWorkerProps(slot))
	w := &worker{pid: pid, slot: slot, capacity: 1, index: index, spread: supervision.Spread(index, p.s.Size, p.workers.random())}
	p.workers.add(w)
	return w
}

func (p *poolActor) onReady(ctx actor.Context, m *workerReady) {
	w := p.workers.get(m.worker)
	if w == nil {
		return
	}
	w.becameReady(m, p.now())
	publish(p.s.Events, telemetry.WorkerReady{Time: time.Now(), Pool: p.s.Name, Worker: w.slot.id, Pid: m.pid,
		Capacity: m.capacity, Boot: m.boot})
	if w.recycle.replaces != nil {
		p.promoteReplacement(ctx, w)
	}
	p.answerWaiters(ctx)
	p.pump(ctx)
}

// onDown takes a worker incarnation out of routing: its process died, or it
// is about to be killed. Its running calls are answered by their goroutines.
func (p *poolActor) onDown(ctx actor.Context, m *workerDown) {
	w := p.workers.get(m.worker)
	if w == nil || w.gen != m.gen {
		return
	}
	w.wentDown()
	for _, id := range p.calls.runningOn(w) {
		p.calls.finished(id)
		p.sessions.callDone(id, p.now())
	}
	p.sessionsLost(ctx, w, m.gen, orText(m.why, "its process died"))
	p.answerDrainers(ctx)
}

// onTerminated removes a worker that was retired, a replacement that failed
// to start, or a worker its restart type lets go.
func (p *poolActor) onTerminated(ctx actor.Context, who *actor.PID) {
	w := p.workers.get(who)
	if w == nil {
		return
	}
	publish(p.s.Events, telemetry.WorkerStopped{Time: time.Now(), Pool: p.s.Name, Worker: w.slot.id, Reason: p.stopReason(w)})
	if p.failErr != nil {
		return
	}
	switch {
	case w.recycle.retiring:
		p.removeWorker(w)
		p.retired(ctx, w)
	case w.recycle.replaces != nil:
		p.removeWorker(w)
		p.replacementFailed(ctx, w)
	case w.restart.letGo:
		p.removeWorker(w)
		if p.workers.readyCount() == 0 && len(p.workers.members()) == 0 {
			p.fail(ctx, fmt.Errorf("every worker has exited and none is restarted (PoolConfig.Restart.Type %q)", p.sup.Type()))
		}
	}
}

// stopReason says why w's actor ended, for telemetry.WorkerStopped.
func (p *poolActor) stopReason(w *worker) string {
	switch {
	case w.recycle.retiring:
		return "recycled"
	case w.recycle.replaces != nil:
		return "replacement did not start"
	case w.restart.letGo:
		return "not restarted"
	case p.failErr != nil:
		return "pool failed"
	}
	return "stop"
}

func (p *poolActor) removeWorker(w *worker) {
	p.timers.stop(drainKey(w.pid))
	p.timers.stop(sessionDrainKey(w.pid))
	p.workers.remove(w)
	p.sup.Forget(w.slot.id)
}
