package actors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	"github.com/snakepit-go/snakepit/telemetry"
)

// SessionPolicy bounds a pool's sessions (Runtime.OpenSession): how many,
// how long an idle one lives, and how long a recycled worker waits for the
// sessions it holds.
type SessionPolicy struct {
	// MaxSessions is the most sessions open in the pool at once; one more is
	// refused with ErrSessionLimit. Default 10000.
	MaxSessions int

	// MaxPerWorker is the most sessions placed on one worker; a new session
	// goes to the worker holding the fewest. Default 0: no limit.
	MaxPerWorker int

	// IdleTTL closes a session that has had no call for this long (its
	// Python end hook runs); later calls get ErrSessionLost. Default 30m.
	IdleTTL time.Duration

	// DrainTimeout is how long a worker being recycled keeps serving the
	// strict sessions it holds before it stops anyway (their later calls get
	// ErrSessionLost). Default 30s.
	DrainTimeout time.Duration
}

// Session policy defaults.
const (
	DefaultMaxSessions         = 10000
	DefaultSessionIdleTTL      = 30 * time.Minute
	DefaultSessionDrainTimeout = 30 * time.Second
)

// WithDefaults fills in the zero fields.
func (p SessionPolicy) WithDefaults() SessionPolicy {
	if p.MaxSessions == 0 {
		p.MaxSessions = DefaultMaxSessions
	}
	if p.IdleTTL == 0 {
		p.IdleTTL = DefaultSessionIdleTTL
	}
	if p.DrainTimeout == 0 {
		p.DrainTimeout = DefaultSessionDrainTimeout
	}
	return p
}

// sweepEvery is how often a pool looks for idle sessions: a quarter of the
// idle TTL, between 10 ms and 1 s.
func (p SessionPolicy) sweepEvery() time.Duration {
	return min(max(p.IdleTTL/4, 10*time.Millisecond), time.Second)
}

// Session modes.
const (
	// ModeStrict: every call runs on the session's worker, queueing for it.
	ModeStrict = "strict"
	// ModeStrictFailFast: every call runs on the session's worker, or fails
	// at once with ErrSessionBusy when it has no free slot.
	ModeStrictFailFast = "strict-fail-fast"
	// ModeHint: the session's worker when it is free, any worker otherwise
	// (the session moves there; the result reports it).
	ModeHint = "hint"
)

// Session errors, matched with errors.Is.
var (
	// ErrSessionLost: the session's worker is gone, or the session was
	// closed or expired.
	ErrSessionLost = errors.New("session lost")
	// ErrSessionLimit: the pool (MaxSessions) or every worker
	// (MaxPerWorker) holds as many sessions as it may.
	ErrSessionLimit = errors.New("session limit reached")
)

// Requests the runtime sends to a pool actor about sessions.
type (
	// OpenSession places a new session; answered with *SessionOpened.
	OpenSession struct {
		ID   string
		Mode string
	}
	// SessionOpened answers OpenSession: the worker holding it, or Err.
	SessionOpened struct {
		Worker string
		Err    error
	}
	// CloseSession ends a session; answered with *SessionClosed once the
	// worker's end hook has run.
	CloseSession struct{ ID string }
	// SessionClosed answers CloseSession.
	SessionClosed struct {
		Ended     bool   // the session had state on its worker
		HookError string // what the Python end hook raised, if it did
		Err       error
	}
)

// Messages about sessions between a pool, its workers and itself.
type (
	// endSession asks a worker to run the session's end hook; replyTo (if
	// not nil) gets the *SessionClosed.
	endSession struct {
		id      string
		gen     uint64
		replyTo *actor.PID
	}
	// sessionEnded tells the pool a worker finished an endSession.
	sessionEnded struct{ worker *actor.PID }
	sessionSweep struct{}
	// sessionDrainOver: a retiring worker's session drain timeout passed.
	sessionDrainOver struct{ worker *actor.PID }
)

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

// onOpenSession places a session on the worker holding the fewest (ties: the
// least loaded), synchronously: its first calls all find it bound.
func (p *poolActor) onOpenSession(ctx actor.Context, m *OpenSession) {
	reply := func(err error) { ctx.Respond(&SessionOpened{Err: err}) }
	switch {
	case p.failed != "":
		reply(fmt.Errorf("%w: pool %q has failed: %s", ErrPoolUnavailable, p.s.Name, p.failed))
		return
	case p.draining:
		reply(fmt.Errorf("%w: pool %q is stopping", ErrPoolUnavailable, p.s.Name))
		return
	case len(p.sessions) >= p.sessionPolicy.MaxSessions:
		reply(fmt.Errorf("%w: pool %q holds %d sessions (PoolConfig.Sessions.MaxSessions); close some", ErrSessionLimit,
			p.s.Name, len(p.sessions)))
		return
	}
	var best *worker
	ready := 0
	for _, w := range p.workers {
		if !w.ready || !w.member() {
			continue
		}
		ready++
		if p.sessionPolicy.MaxPerWorker > 0 && w.sessions >= p.sessionPolicy.MaxPerWorker {
			continue
		}
		if best == nil || w.sessions < best.sessions || (w.sessions == best.sessions && w.load < best.load) {
			best = w
		}
	}
	switch {
	case best == nil && ready > 0:
		reply(fmt.Errorf("%w: every worker of pool %q holds %d sessions (PoolConfig.Sessions.MaxPerWorker)", ErrSessionLimit,
			p.s.Name, p.sessionPolicy.MaxPerWorker))
		return
	case best == nil:
		reply(fmt.Errorf("%w: pool %q has no ready worker to hold a session; try again once it has", ErrPoolUnavailable, p.s.Name))
		return
	}
	mode := m.Mode
	if mode == "" {
		mode = ModeStrict
	}
	s := &session{id: m.ID, mode: mode, w: best, gen: best.gen, last: best.slot.id, lastUsed: time.Now()}
	p.sessions[s.id] = s
	best.sessions++
	publish(p.s.Events, telemetry.SessionOpened{Time: s.lastUsed, Pool: p.s.Name, Session: s.id, Worker: best.slot.id, Mode: mode})
	ctx.Respond(&SessionOpened{Worker: best.slot.id})
}

// onCloseSession ends a session: its queued calls fail, its worker runs the
// end hook, and the caller hears once it has. Closing a session that is gone
// (expired, or closed before) answers at once.
func (p *poolActor) onCloseSession(ctx actor.Context, m *CloseSession) {
	s := p.sessions[m.ID]
	if s == nil {
		ctx.Respond(&SessionClosed{})
		return
	}
	p.endSession(ctx, s, "closed", ctx.Sender())
}

// endSession removes s; its worker (if it still holds it) runs the end hook
// and answers replyTo (nil: nobody waits).
func (p *poolActor) endSession(ctx actor.Context, s *session, reason string, replyTo *actor.PID) {
	delete(p.sessions, s.id)
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
	w.sessions--
	w.ending++
	ctx.Send(w.pid, &endSession{id: s.id, gen: s.gen, replyTo: replyTo})
}

func (p *poolActor) onSessionEnded(ctx actor.Context, m *sessionEnded) {
	if w := p.byID[m.worker.Id]; w != nil && w.ending > 0 {
		w.ending--
		p.retireIfIdle(ctx, w)
	}
}

// onSessionCall routes a call of session id: to its worker (strict modes),
// or to its worker when free and any free worker otherwise (hint).
func (p *poolActor) onSessionCall(ctx actor.Context, d *dispatch, id string) {
	s := p.sessions[id]
	if s == nil {
		p.reject(ctx, d, apb.Failure_CODE_SESSION_LOST, fmt.Sprintf(
			"session %s is closed or expired (idle longer than PoolConfig.Sessions.IdleTTL %s); open a new one", id, p.sessionPolicy.IdleTTL))
		return
	}
	s.lastUsed = time.Now()
	if s.lost != "" {
		p.reject(ctx, d, apb.Failure_CODE_SESSION_LOST, s.lost)
		return
	}
	if s.mode != ModeHint && s.bound() && d.req.GetOriginWorker() == s.w.slot.id && s.w.load >= s.w.capacity {
		p.reject(ctx, d, apb.Failure_CODE_DEADLOCK, fmt.Sprintf(
			"a callback handler called session %s, whose worker %s is busy running the call that made the callback: "+
				"it could never run (use a hint-mode session, a worker with spare capacity, or answer from the handler itself)",
			s.id, s.w.slot.id))
		return
	}
	d.sess = s
	s.active++
	if len(p.queue) == 0 || s.mode != ModeHint {
		if p.dispatchSession(ctx, d) {
			return
		}
	}
	if s.mode == ModeStrictFailFast {
		s.active--
		p.reject(ctx, d, apb.Failure_CODE_SESSION_BUSY, fmt.Sprintf(
			"session %s's worker %s has no free slot (mode %s); retry later or use mode %s", s.id, s.w.slot.id, s.mode, ModeStrict))
		return
	}
	if len(p.queue) >= p.s.QueueSize {
		s.active--
		p.saturate(ctx, d)
		return
	}
	p.noCapacity++
	p.sessionQueued++
	d.queuedAt = time.Now()
	p.queue = append(p.queue, d)
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
	best := p.leastLoadedFree()
	if best == nil {
		return false
	}
	if s.bound() {
		p.unbind(ctx, s, nil)
	}
	d.reboundFrom = s.last
	s.w, s.gen, s.last = best, best.gen, best.slot.id
	best.sessions++
	publish(p.s.Events, telemetry.SessionRebound{Time: time.Now(), Pool: p.s.Name, Session: s.id, From: d.reboundFrom, To: best.slot.id})
	p.assign(ctx, d, best)
	return true
}

// sessionsLost handles the end of w's incarnation gen: its strict sessions
// are lost (their queued calls fail now), its hint sessions unbound.
func (p *poolActor) sessionsLost(ctx actor.Context, w *worker, gen uint64, why string) {
	if w.sessions == 0 {
		return
	}
	for _, s := range p.sessions {
		if s.w != w || s.gen != gen {
			continue
		}
		s.w = nil
		w.sessions--
		if s.mode != ModeHint {
			s.lost = fmt.Sprintf("session %s lost its worker %s: %s; open a new session", s.id, w.slot.id, why)
			p.failSessionCalls(ctx, s, s.lost)
			publish(p.s.Events, telemetry.SessionClosed{Time: time.Now(), Pool: p.s.Name, Session: s.id, Worker: w.slot.id, Reason: "lost"})
		}
	}
}

// failSessionCalls answers s's queued calls with SESSION_LOST.
func (p *poolActor) failSessionCalls(ctx actor.Context, s *session, msg string) {
	if p.sessionQueued == 0 {
		return
	}
	p.queue = slices.DeleteFunc(p.queue, func(d *dispatch) bool {
		if d.sess != s {
			return false
		}
		p.sessionQueued--
		s.active--
		p.reject(ctx, d, apb.Failure_CODE_SESSION_LOST, msg)
		return true
	})
	p.answerDrainers(ctx)
}

// onSessionSweep closes the sessions idle longer than the idle TTL.
func (p *poolActor) onSessionSweep(ctx actor.Context) {
	ttl := p.sessionPolicy.IdleTTL
	now := time.Now()
	for _, s := range p.sessions {
		if s.active == 0 && now.Sub(s.lastUsed) >= ttl {
			p.s.Logger.Debug("session expired", "session", s.id, "idle", now.Sub(s.lastUsed).Round(time.Millisecond))
			p.endSession(ctx, s, "expired", nil)
		}
	}
	for _, s := range p.sessions { // lost sessions are kept only to say why
		if s.lost != "" && now.Sub(s.lastUsed) >= ttl {
			delete(p.sessions, s.id)
		}
	}
}

// sessionCallDone counts a session call finished.
func (p *poolActor) sessionCallDone(id string) {
	if s := p.sessionCalls[id]; s != nil {
		delete(p.sessionCalls, id)
		s.active--
		s.lastUsed = time.Now()
	}
}

// retiringWithSessions starts the session drain of a worker being recycled:
// its hint sessions move on their next call, its strict sessions keep it
// until they close or the drain timeout passes.
func (p *poolActor) retiringWithSessions(ctx actor.Context, w *worker) {
	if w.sessions == 0 {
		return
	}
	for _, s := range p.sessions {
		if s.w == w && s.mode == ModeHint {
			p.unbind(ctx, s, nil)
		}
	}
	if w.sessions == 0 {
		return
	}
	self, system := ctx.Self(), ctx.ActorSystem()
	p.timers["sessions:"+w.pid.Id] = time.AfterFunc(p.sessionPolicy.DrainTimeout, func() {
		system.Root.Send(self, &sessionDrainOver{worker: w.pid})
	})
}

func (p *poolActor) onSessionDrainOver(ctx actor.Context, m *sessionDrainOver) {
	delete(p.timers, "sessions:"+m.worker.Id)
	w := p.byID[m.worker.Id]
	if w == nil || !w.retiring {
		return
	}
	if w.sessions > 0 {
		p.s.Logger.Warn("recycled worker's sessions did not close within the session drain timeout; stopping it",
			"worker", w.slot.id, "sessions", w.sessions, "drain_timeout", p.sessionPolicy.DrainTimeout)
		p.sessionsLost(ctx, w, w.gen, fmt.Sprintf("it was recycled and the session stayed open past PoolConfig.Sessions.DrainTimeout (%s)",
			p.sessionPolicy.DrainTimeout))
	}
	if _, draining := p.timers["drain:"+w.pid.Id]; !draining && !w.stopSent {
		p.stopRetired(ctx, w) // its calls' drain timeout passed too
		return
	}
	p.retireIfIdle(ctx, w)
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
	for _, w := range p.workers {
		if w.slot.id == origin {
			ow = w
		} else if w.member() || w.replaces != nil {
			return "", false // another worker can (or will) take it
		}
	}
	if ow == nil || ow.load < ow.capacity {
		return "", false
	}
	return fmt.Sprintf("a callback handler called pool %q, whose only worker %s is busy running the call that made the callback: "+
		"it could never run (give the pool more workers or a thread profile, or call another pool)", p.s.Name, origin), true
}

// onEndSession runs the session's end hook in Python from a goroutine.
func (w *workerActor) onEndSession(ctx actor.Context, m *endSession) {
	self, parent, root := ctx.Self(), ctx.Parent(), ctx.ActorSystem().Root
	done := func(r *SessionClosed) {
		if m.replyTo != nil {
			root.Send(m.replyTo, r)
		}
		root.Send(parent, &sessionEnded{worker: self})
	}
	if w.h == nil || m.gen != w.gen || w.stopping {
		done(&SessionClosed{}) // its process is gone, and the session's state with it
		return
	}
	conn, timeout := w.h.Conn, w.slot.settings.ShutdownGrace+w.watchdog().HealthTimeout
	go func() {
		c, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		r, err := conn.EndSession(c, m.id)
		if err != nil {
			w.slot.log.Warn("session end hook did not run", "session", m.id, "error", err)
			done(&SessionClosed{Err: fmt.Errorf("the worker did not run the end hook of session %s: %w", m.id, err)})
			return
		}
		if r.GetHookError() != "" {
			w.slot.log.Warn("session end hook raised", "session", m.id, "error", r.GetHookError())
		}
		done(&SessionClosed{Ended: r.GetEnded(), HookError: r.GetHookError()})
	}()
}
