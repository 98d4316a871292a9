package actors

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	"github.com/snakepit-go/snakepit/telemetry"
)

// sessionTable is the pool's sessions: those open (lost ones kept until
// they expire, to say why), and the session of each session call queued or
// running. Its methods decide; the pool's handlers below act.
type sessionTable struct {
	policy SessionPolicy
	open   map[string]*session
	calls  map[string]*session // request id -> session
	sweep  chan struct{}       // stops the idle-session sweep
}

func newSessionTable(policy SessionPolicy) sessionTable {
	return sessionTable{policy: policy, open: map[string]*session{}, calls: map[string]*session{}}
}

// session is the pool's record of one session.
type session struct {
	id       string
	mode     string
	w        *worker // nil: not bound (a hint session whose worker went)
	gen      uint64  // the incarnation of w it is bound to
	last     string  // the id of the worker it was last bound to
	lastUsed time.Time
	active   int    // calls queued or running
	lost     string // why a strict session lost its worker ("": it did not)
}

func (s *session) bound() bool { return s.w != nil && s.w.gen == s.gen && s.w.ready }

// sessionLoad is what a worker holds of the sessions: those bound to it,
// and the end hooks it is running (it does not stop before they are done).
type sessionLoad struct{ bound, ending int }

// Messages the pool sends itself about sessions.
type (
	sessionSweep struct{}
	// sessionDrainOver: a retiring worker's session drain timeout passed.
	sessionDrainOver struct{ worker *actor.PID }
)

// place chooses the worker for a new session: the ready member holding the
// fewest (ties: the least loaded, then the first), under MaxPerWorker.
// ready counts the ready members, so that nil can say why.
func (t *sessionTable) place(workers []*worker) (best *worker, ready int) {
	for _, w := range workers {
		if !w.ready || !w.member() {
			continue
		}
		ready++
		if t.policy.MaxPerWorker > 0 && w.sessions.bound >= t.policy.MaxPerWorker {
			continue
		}
		if best == nil || w.sessions.bound < best.sessions.bound ||
			(w.sessions.bound == best.sessions.bound && w.load < best.load) {
			best = w
		}
	}
	return best, ready
}

// expired lists the sessions idle for the idle TTL at now: those with no
// call queued or running to close, and the lost ones still counting a call
// to forget.
func (t *sessionTable) expired(now time.Time) (idle, forget []*session) {
	for _, s := range t.open {
		switch {
		case now.Sub(s.lastUsed) < t.policy.IdleTTL:
		case s.active == 0:
			idle = append(idle, s)
		case s.lost != "": // lost sessions are kept only to say why
			forget = append(forget, s)
		}
	}
	return idle, forget
}

// callDone counts the session call id finished at now.
func (t *sessionTable) callDone(id string, now time.Time) {
	if s := t.calls[id]; s != nil {
		delete(t.calls, id)
		s.active--
		s.lastUsed = now
	}
}

// bind puts s on w's incarnation.
func (s *session) bind(w *worker) {
	s.w, s.gen, s.last = w, w.gen, w.slot.id
	w.sessions.bound++
}

// openError says why a session cannot be opened now, or nil.
func (p *poolActor) openError() error {
	switch {
	case p.failErr != nil:
		return poolFailedError(p.s.Name, p.failReason())
	case p.draining:
		return poolStoppingError(p.s.Name)
	case len(p.sessions.open) >= p.sessions.policy.MaxSessions:
		return fmt.Errorf("%w: pool %q holds %d sessions (PoolConfig.Sessions.MaxSessions); close some", ErrSessionLimit,
			p.s.Name, len(p.sessions.open))
	}
	return nil
}

// onOpenSession places a session on the worker holding the fewest (ties: the
// least loaded), synchronously: its first calls all find it bound.
func (p *poolActor) onOpenSession(ctx actor.Context, m *OpenSession) {
	if err := p.openError(); err != nil {
		ctx.Respond(&SessionOpened{Err: err})
		return
	}
	best, ready := p.sessions.place(p.workers.list)
	switch {
	case best == nil && ready > 0:
		ctx.Respond(&SessionOpened{Err: fmt.Errorf("%w: every worker of pool %q holds %d sessions (PoolConfig.Sessions.MaxPerWorker)",
			ErrSessionLimit, p.s.Name, p.sessions.policy.MaxPerWorker)})
		return
	case best == nil:
		ctx.Respond(&SessionOpened{Err: fmt.Errorf("%w: pool %q has no ready worker to hold a session; try again once it has",
			ErrPoolUnavailable, p.s.Name)})
		return
	}
	s := &session{id: m.ID, mode: orText(m.Mode, ModeStrict), lastUsed: p.now()}
	s.bind(best)
	p.sessions.open[s.id] = s
	publish(p.s.Events, telemetry.SessionOpened{Time: time.Now(), Pool: p.s.Name, Session: s.id, Worker: best.slot.id, Mode: s.mode})
	ctx.Respond(&SessionOpened{Worker: best.slot.id})
}

// onCloseSession ends a session: its queued calls fail, its worker runs the
// end hook, and the caller hears once it has. Closing a session that is gone
// (expired, or closed before) answers at once.
func (p *poolActor) onCloseSession(ctx actor.Context, m *CloseSession) {
	s := p.sessions.open[m.ID]
	if s == nil {
		ctx.Respond(&SessionClosed{})
		return
	}
	p.endSession(ctx, s, "closed", ctx.Sender())
}

// endSession removes s; its worker (if it still holds it) runs the end hook
// and answers replyTo (nil: nobody waits).
func (p *poolActor) endSession(ctx actor.Context, s *session, reason string, replyTo *actor.PID) {
	delete(p.sessions.open, s.id)
	p.failSessionCalls(ctx, s, fmt.Sprintf("session %s was %s", s.id, reason))
	worker := s.last
	if s.bound() {
		p.unbind(ctx, s, replyTo)
	} else if replyTo != nil {
		ctx.Send(replyTo, &SessionClosed{})
	}
	publish(p.s.Events, telemetry.SessionClosed{Time: time.Now(), Pool: p.s.Name, Session: s.id, Worker: worker, Reason: reason})
}

// unbind takes s off its worker, which runs the session's end hook.
func (p *poolActor) unbind(ctx actor.Context, s *session, replyTo *actor.PID) {
	w := s.w
	s.w = nil
	w.sessions.bound--
	w.sessions.ending++
	ctx.Send(w.pid, &endSession{id: s.id, gen: s.gen, replyTo: replyTo})
}

func (p *poolActor) onSessionEnded(ctx actor.Context, m *sessionEnded) {
	if w := p.workers.get(m.worker); w != nil && w.sessions.ending > 0 {
		w.sessions.ending--
		p.retireIfIdle(ctx, w)
	}
}

// onSessionCall routes a call of session id: to its worker (strict modes),
// or to its worker when free and any free worker otherwise (hint).
func (p *poolActor) onSessionCall(ctx actor.Context, d *dispatch, id string) {
	s, refusal := p.sessionFor(d, id)
	if s == nil {
		p.reject(ctx, d, refusal.code, refusal.msg)
		return
	}
	d.sess = s
	s.active++
	if len(p.calls.waiting) == 0 || s.mode != ModeHint {
		if p.dispatchSession(ctx, d) {
			return
		}
	}
	switch {
	case s.mode == ModeStrictFailFast:
		p.dropQueued(ctx, d, apb.Failure_CODE_SESSION_BUSY, fmt.Sprintf(
			"session %s's worker %s has no free slot (mode %s); retry later or use mode %s", s.id, s.w.slot.id, s.mode, ModeStrict))
	case p.calls.full():
		s.active--
		p.saturate(ctx, d)
	default:
		p.calls.push(d, p.now())
	}
}

// sessionRefusal is why a session call is refused before it is routed.
type sessionRefusal struct {
	code apb.Failure_Code
	msg  string
}

// sessionFor finds the session of call d, marking it used, or says why the
// call is refused.
func (p *poolActor) sessionFor(d *dispatch, id string) (*session, sessionRefusal) {
	s := p.sessions.open[id]
	if s == nil {
		return nil, sessionRefusal{apb.Failure_CODE_SESSION_LOST, fmt.Sprintf(
			"session %s is closed or expired (idle longer than PoolConfig.Sessions.IdleTTL %s); open a new one", id, p.sessions.policy.IdleTTL)}
	}
	s.lastUsed = p.now()
	if s.lost != "" {
		return nil, sessionRefusal{apb.Failure_CODE_SESSION_LOST, s.lost}
	}
	if s.mode != ModeHint && s.bound() && d.req.GetOriginWorker() == s.w.slot.id && s.w.load >= s.w.capacity {
		return nil, sessionRefusal{apb.Failure_CODE_DEADLOCK, fmt.Sprintf(
			"a callback handler called session %s, whose worker %s is busy running the call that made the callback: "+
				"it could never run (use a hint-mode session, a worker with spare capacity, or answer from the handler itself)",
			s.id, s.w.slot.id)}
	}
	return s, sessionRefusal{}
}

// dispatchSession sends a session call to a worker if one may take it now.
func (p *poolActor) dispatchSession(ctx actor.Context, d *dispatch) bool {
	s := d.sess
	if s.mode != ModeHint {
		if s.bound() && s.w.load < s.w.capacity {
			p.assign(ctx, d, s.w)
			return true
		}
		return false
	}
	if s.bound() && s.w.free() {
		p.assign(ctx, d, s.w)
		return true
	}
	best := p.workers.leastLoadedFree()
	if best == nil {
		return false
	}
	if s.bound() {
		p.unbind(ctx, s, nil)
	}
	d.reboundFrom = s.last
	s.bind(best)
	publish(p.s.Events, telemetry.SessionRebound{Time: time.Now(), Pool: p.s.Name, Session: s.id, From: d.reboundFrom, To: best.slot.id})
	p.assign(ctx, d, best)
	return true
}

// sessionsLost handles the end of w's incarnation gen: its strict sessions
// are lost (their queued calls fail now), its hint sessions unbound.
func (p *poolActor) sessionsLost(ctx actor.Context, w *worker, gen uint64, why string) {
	if w.sessions.bound == 0 {
		return
	}
	for _, s := range p.sessions.open {
		if s.w != w || s.gen != gen {
			continue
		}
		s.w = nil
		w.sessions.bound--
		if s.mode != ModeHint {
			s.lost = fmt.Sprintf("session %s lost its worker %s: %s; open a new session", s.id, w.slot.id, why)
			p.failSessionCalls(ctx, s, s.lost)
			publish(p.s.Events, telemetry.SessionClosed{Time: time.Now(), Pool: p.s.Name, Session: s.id, Worker: w.slot.id, Reason: "lost"})
		}
	}
}

// failSessionCalls answers s's queued calls with SESSION_LOST.
func (p *poolActor) failSessionCalls(ctx actor.Context, s *session, msg string) {
	if p.calls.sessionWaiting == 0 {
		return
	}
	for _, d := range p.calls.removeIf(func(d *dispatch) bool { return d.sess == s }) {
		p.dropQueued(ctx, d, apb.Failure_CODE_SESSION_LOST, msg)
	}
	p.answerDrainers(ctx)
}

// onSessionSweep closes the sessions idle longer than the idle TTL.
func (p *poolActor) onSessionSweep(ctx actor.Context) {
	now := p.now()
	idle, forget := p.sessions.expired(now)
	for _, s := range idle {
		p.s.Logger.Debug("session expired", "session", s.id, "idle", now.Sub(s.lastUsed).Round(time.Millisecond))
		p.endSession(ctx, s, "expired", nil)
	}
	for _, s := range forget {
		delete(p.sessions.open, s.id)
	}
}

// retiringWithSessions starts the session drain of a worker being recycled:
// its hint sessions move on their next call, its strict sessions keep it
// until they close or the drain timeout passes.
func (p *poolActor) retiringWithSessions(ctx actor.Context, w *worker) {
	if w.sessions.bound == 0 {
		return
	}
	for _, s := range p.sessions.open {
		if s.w == w && s.mode == ModeHint {
			p.unbind(ctx, s, nil)
		}
	}
	if w.sessions.bound > 0 {
		p.timers.after(ctx.ActorSystem(), ctx.Self(), sessionDrainKey(w.pid), p.sessions.policy.DrainTimeout,
			&sessionDrainOver{worker: w.pid})
	}
}

func (p *poolActor) onSessionDrainOver(ctx actor.Context, m *sessionDrainOver) {
	p.timers.fired(sessionDrainKey(m.worker))
	w := p.workers.get(m.worker)
	if w == nil || !w.recycle.retiring {
		return
	}
	if w.sessions.bound > 0 {
		timeout := p.sessions.policy.DrainTimeout
		p.s.Logger.Warn("recycled worker's sessions did not close within the session drain timeout; stopping it",
			"worker", w.slot.id, "sessions", w.sessions.bound, "drain_timeout", timeout)
		p.sessionsLost(ctx, w, w.gen, fmt.Sprintf(
			"it was recycled and the session stayed open past PoolConfig.Sessions.DrainTimeout (%s)", timeout))
	}
	if !p.timers.pending(drainKey(w.pid)) && !w.recycle.stopSent {
		p.stopRetired(ctx, w) // its calls' drain timeout passed too
		return
	}
	p.retireIfIdle(ctx, w)
}
