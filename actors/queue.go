package actors

import (
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	"github.com/snakepit-go/snakepit/telemetry"
)

// callQueue is the pool's calls: the bounded queue of those waiting for a
// worker (FIFO, but a session call waits for its own worker and holds up no
// other call), the worker running each dispatched one, and the counts the
// pool reports. Its methods decide; the pool's handlers below act.
type callQueue struct {
	limit   int
	waiting []*dispatch
	running map[string]*worker // request id -> worker running it
	// sessionWaiting counts the session calls among waiting.
	sessionWaiting int
	// noCapacity counts calls that found no worker with free capacity and
	// waited; saturated counts calls refused with the queue full, the last
	// at lastSaturated; served counts the calls done.
	noCapacity, saturated int64
	lastSaturated         time.Time
	served                int64
}

func newCallQueue(limit int) callQueue {
	return callQueue{limit: limit, running: map[string]*worker{}}
}

func (q *callQueue) full() bool { return len(q.waiting) >= q.limit }

// idle reports whether no call is queued or running.
func (q *callQueue) idle() bool { return len(q.waiting) == 0 && len(q.running) == 0 }

// push queues d, which found no worker free, at the tail.
func (q *callQueue) push(d *dispatch, now time.Time) {
	q.noCapacity++
	d.queuedAt = now
	q.waiting = append(q.waiting, d)
	if d.sess != nil {
		q.sessionWaiting++
	}
}

// pushFront puts d back at the head: it was dispatched, and came back.
func (q *callQueue) pushFront(d *dispatch) {
	q.waiting = append([]*dispatch{d}, q.waiting...)
	if d.sess != nil {
		q.sessionWaiting++
	}
}

// refused counts a call refused with the queue full.
func (q *callQueue) refused() {
	q.saturated++
	q.lastSaturated = time.Now()
}

// remove takes the queued call id out, or returns nil.
func (q *callQueue) remove(id string) *dispatch {
	i := slices.IndexFunc(q.waiting, func(d *dispatch) bool { return d.id() == id })
	if i < 0 {
		return nil
	}
	d := q.waiting[i]
	q.waiting = slices.Delete(q.waiting, i, i+1)
	q.left(d)
	return d
}

// removeIf takes out, in order, the queued calls drop says to.
func (q *callQueue) removeIf(drop func(*dispatch) bool) []*dispatch {
	var out []*dispatch
	q.waiting = slices.DeleteFunc(q.waiting, func(d *dispatch) bool {
		if !drop(d) {
			return false
		}
		q.left(d)
		out = append(out, d)
		return true
	})
	return out
}

// takeAll empties the queue.
func (q *callQueue) takeAll() []*dispatch {
	out := q.waiting
	q.waiting, q.sessionWaiting = nil, 0
	return out
}

func (q *callQueue) left(d *dispatch) {
	if d.sess != nil {
		q.sessionWaiting--
	}
}

// drain hands the queued calls to take, in order, and the ones whose
// deadline is past now to expired instead. Without session calls queued it
// stops at the first call take refuses (FIFO); with some, it goes on: a
// session call waits for its own worker, so one that cannot go yet holds up
// no other call, while a plain call refused still holds up the plain calls
// behind it.
func (q *callQueue) drain(now time.Time, take func(*dispatch) bool, expired func(*dispatch)) {
	if q.sessionWaiting == 0 {
		q.drainFIFO(now, take, expired)
		return
	}
	blocked := false // a plain call found no worker free
	kept := q.waiting[:0]
	for _, d := range q.waiting {
		switch {
		case d.deadlinePassed(now):
			q.left(d)
			expired(d)
		case (d.sess != nil || !blocked) && take(d):
			q.left(d)
		default:
			blocked = blocked || d.sess == nil
			kept = append(kept, d)
		}
	}
	clear(q.waiting[len(kept):])
	q.waiting = kept
}

func (q *callQueue) drainFIFO(now time.Time, take func(*dispatch) bool, expired func(*dispatch)) {
	for len(q.waiting) > 0 {
		d := q.waiting[0]
		if d.deadlinePassed(now) {
			q.waiting = q.waiting[1:]
			expired(d)
			continue
		}
		if !take(d) {
			return
		}
		q.waiting = q.waiting[1:]
	}
}

// started records that w runs d; finished that call id is over.
func (q *callQueue) started(d *dispatch, w *worker) { q.running[d.id()] = w }
func (q *callQueue) finished(id string)             { delete(q.running, id) }

// runningOn lists the calls w runs.
func (q *callQueue) runningOn(w *worker) []string {
	var ids []string
	for id, rw := range q.running {
		if rw == w {
			ids = append(ids, id)
		}
	}
	return ids
}

// onCall routes a new call: to the least-loaded worker with free capacity,
// else into the queue, else refused (saturated).
func (p *poolActor) onCall(ctx actor.Context, d *dispatch) {
	switch {
	case p.failErr != nil:
		p.reject(ctx, d, apb.Failure_CODE_POOL_UNAVAILABLE, poolFailedText(p.s.Name, p.failReason()))
	case p.draining:
		p.reject(ctx, d, apb.Failure_CODE_POOL_UNAVAILABLE, poolStoppingText(p.s.Name))
	case d.req.GetSessionId() != "":
		p.onSessionCall(ctx, d, d.req.GetSessionId())
	case len(p.calls.waiting) == 0 && p.tryDispatch(ctx, d):
	case p.calls.full():
		p.saturate(ctx, d)
	default:
		if why, stuck := p.wouldDeadlock(d); stuck {
			p.reject(ctx, d, apb.Failure_CODE_DEADLOCK, why)
			return
		}
		p.calls.push(d, p.now())
	}
}

// saturate refuses d: the queue is full.
func (p *poolActor) saturate(ctx actor.Context, d *dispatch) {
	p.calls.refused()
	publish(p.s.Events, telemetry.PoolSaturated{Time: time.Now(), Pool: p.s.Name, Tool: d.req.GetExecute().GetTool(),
		Queued: len(p.calls.waiting), Limit: p.s.QueueSize})
	p.reject(ctx, d, apb.Failure_CODE_SATURATED, fmt.Sprintf(
		"pool %q is saturated: all %d workers busy and %d calls queued (PoolConfig.QueueSize)", p.s.Name, p.s.Size, len(p.calls.waiting)))
}

// tryDispatch sends d to the least-loaded worker with free capacity.
func (p *poolActor) tryDispatch(ctx actor.Context, d *dispatch) bool {
	best := p.workers.leastLoadedFree()
	if best == nil {
		return false
	}
	p.assign(ctx, d, best)
	return true
}

// assign sends d to w and counts it running there.
func (p *poolActor) assign(ctx actor.Context, d *dispatch, w *worker) {
	if w.took() && listening(p.s.Events) {
		p.s.Events.Publish(telemetry.CapacityReached{Time: time.Now(), Pool: p.s.Name, Worker: w.slot.id,
			Capacity: w.capacity, Load: w.load})
	}
	d.gen = w.gen
	p.calls.started(d, w)
	if d.sess != nil {
		p.sessions.calls[d.id()] = d.sess
	}
	ctx.Send(w.pid, d)
}

// pump moves queued calls to free workers, dropping those past their
// deadline.
func (p *poolActor) pump(ctx actor.Context) {
	if len(p.calls.waiting) > 0 {
		now := p.now()
		p.calls.drain(now, func(d *dispatch) bool { return p.place(ctx, d) }, func(d *dispatch) {
			p.dropQueued(ctx, d, apb.Failure_CODE_DEADLINE, "deadline exceeded while queued")
			p.queueTimedOut(d, now)
		})
	}
	p.answerDrainers(ctx)
}

// place dispatches a queued call if a worker may take it now.
func (p *poolActor) place(ctx actor.Context, d *dispatch) bool {
	if d.sess != nil {
		return p.dispatchSession(ctx, d)
	}
	return p.tryDispatch(ctx, d)
}

// onFreed gives a finished call's slot back to its worker.
func (p *poolActor) onFreed(ctx actor.Context, m *slotFreed) {
	w := p.workers.get(m.worker)
	if w == nil || w.gen != m.gen {
		return
	}
	p.calls.finished(m.id)
	if len(p.sessions.calls) > 0 {
		p.sessions.callDone(m.id, p.now())
	}
	w.finished()
	p.calls.served++
	p.retireIfIdle(ctx, w)
	p.pump(ctx)
}

// onRequeue puts a call that never reached Python back at the head of the
// queue, unless the pool has failed meanwhile.
func (p *poolActor) onRequeue(ctx actor.Context, d *dispatch) {
	p.calls.finished(d.id())
	if p.failErr != nil {
		p.reject(ctx, d, apb.Failure_CODE_POOL_UNAVAILABLE, poolFailedText(p.s.Name, p.failReason()))
		return
	}
	if d.sess != nil {
		delete(p.sessions.calls, d.id())
		if d.sess.lost != "" || p.sessions.open[d.sess.id] != d.sess {
			p.dropQueued(ctx, d, apb.Failure_CODE_SESSION_LOST, orText(d.sess.lost, "session "+d.sess.id+" was closed"))
			return
		}
	}
	p.calls.pushFront(d)
	p.pump(ctx)
}

// onCancel drops a queued call its caller gave up on, or has its worker
// cancel it.
func (p *poolActor) onCancel(ctx actor.Context, m *apb.CancelCall) {
	id := m.GetRequestId()
	if d := p.calls.remove(id); d != nil {
		p.dropQueued(ctx, d, apb.Failure_CODE_CANCELLED, "cancelled by the caller while queued")
		if now := p.now(); d.deadlinePassed(now) { // the caller's deadline, not a cancel
			p.queueTimedOut(d, now)
		}
		p.answerDrainers(ctx)
		return
	}
	if w, ok := p.calls.running[id]; ok {
		ctx.Send(w.pid, m)
	}
}

// dropQueued answers a call taken out of the queue (or never queued) with
// a failure; it no longer counts for its session.
func (p *poolActor) dropQueued(ctx actor.Context, d *dispatch, code apb.Failure_Code, msg string) {
	if d.sess != nil {
		d.sess.active--
	}
	p.reject(ctx, d, code, msg)
}

// queueTimedOut publishes that d's deadline passed while it was queued.
func (p *poolActor) queueTimedOut(d *dispatch, now time.Time) {
	publish(p.s.Events, telemetry.QueueTimeout{Time: now, Pool: p.s.Name, Tool: d.req.GetExecute().GetTool(),
		Waited: now.Sub(d.queuedAt)})
}

func (p *poolActor) reject(ctx actor.Context, d *dispatch, code apb.Failure_Code, msg string) {
	ctx.Send(d.caller, &apb.CallReply{RequestId: d.id(), Failure: &apb.Failure{Code: code, Message: msg}})
}

// wouldDeadlock reports whether a call made from a callback handler could
// only ever run on the worker waiting for that handler: origin is in this
// pool, has no free slot, and no other worker exists to take the call.
func (p *poolActor) wouldDeadlock(d *dispatch) (string, bool) {
	origin := d.req.GetOriginWorker()
	if origin == "" {
		return "", false
	}
	var ow *worker
	for _, w := range p.workers.list {
		if w.slot.id == origin {
			ow = w
		} else if w.member() || w.recycle.replaces != nil {
			return "", false // another worker can (or will) take it
		}
	}
	if ow == nil || ow.load < ow.capacity {
		return "", false
	}
	return fmt.Sprintf("a callback handler called pool %q, whose only worker %s is busy running the call that made the callback: "+
		"it could never run (give the pool more workers or a thread profile, or call another pool)", p.s.Name, origin), true
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
