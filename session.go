package snakepit

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"

	"github.com/snakepit-go/snakepit/actors"
)

// SessionMode is how a session's calls find its worker.
type SessionMode string

// Session modes.
const (
	// SessionStrict: every call runs on the session's worker, waiting in the
	// pool's queue for it when it is busy. When the worker dies (or is
	// recycled away) the session is lost: calls fail with ErrSessionLost.
	SessionStrict SessionMode = actors.ModeStrict
	// SessionStrictFailFast: as SessionStrict, but a call that finds the
	// worker busy fails at once with ErrSessionBusy instead of waiting.
	SessionStrictFailFast SessionMode = actors.ModeStrictFailFast
	// SessionHint: the session's worker when it is free, any free worker
	// otherwise; the session then moves there (Result.ReboundFrom says so,
	// and the old worker runs the end hook). Its Python state does not move:
	// use it for caches, not for state a call depends on.
	SessionHint SessionMode = actors.ModeHint
)

// SessionOptions configure Runtime.OpenSession.
type SessionOptions struct {
	// Mode is SessionStrict (default), SessionStrictFailFast or SessionHint.
	Mode SessionMode
}

// Session is a line of calls that run on one worker, so that Python state
// kept between them (snakepit.current_session().state) stays put. Python
// hears of it: the adapter's on_session_start(session) runs before the
// session's first call on a worker, on_session_end(session) when it is
// closed, expires (PoolConfig.Sessions.IdleTTL) or moves away (hint mode).
// Its methods are safe for concurrent use.
type Session struct {
	rt   *Runtime
	pool string
	id   string
	mode SessionMode

	mu     sync.Mutex
	worker string
	closed bool
}

// OpenSession places a new session on the worker of pool holding the
// fewest sessions (PoolConfig.Sessions bounds them), before it returns: the
// session's first calls, however many at once, all find it bound to that
// worker. Close it when done.
func (rt *Runtime) OpenSession(ctx context.Context, pool string, opts SessionOptions) (*Session, error) {
	pid, err := rt.pool(pool)
	if err != nil {
		return nil, err
	}
	mode := opts.Mode
	switch mode {
	case "":
		mode = SessionStrict
	case SessionStrict, SessionStrictFailFast, SessionHint:
	default:
		return nil, fmt.Errorf("snakepit: pool %q: session mode %q: %w; use SessionStrict, SessionStrictFailFast or SessionHint",
			pool, mode, ErrBadArguments)
	}
	id := "s-" + randomHex(8)
	opened, err := askFor[*actors.SessionOpened](ctx, rt, pid, &actors.OpenSession{ID: id, Mode: string(mode)})
	if err != nil {
		return nil, fmt.Errorf("snakepit: pool %q: open session: %w", pool, err)
	}
	if opened.Err != nil {
		return nil, fmt.Errorf("snakepit: pool %q: open session: %w", pool, opened.Err)
	}
	return &Session{rt: rt, pool: pool, id: id, mode: mode, worker: opened.Worker}, nil
}

// ID identifies the session; Python sees it as snakepit.current_session().id.
func (s *Session) ID() string { return s.id }

// Mode is the session's mode.
func (s *Session) Mode() SessionMode { return s.mode }

// Worker is the id of the worker the session is bound to (a hint-mode
// session's changes when it moves).
func (s *Session) Worker() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.worker
}

// Call runs tool on the session's worker, as Runtime.Call does; it also
// fails with ErrSessionLost (the session is closed, expired, or its worker
// is gone) or ErrSessionBusy (strict-fail-fast, worker busy).
func (s *Session) Call(ctx context.Context, tool string, args any, opts ...CallOption) (*Result, error) {
	if err := s.usable(tool); err != nil {
		return nil, err
	}
	o := callOptions(opts)
	o.session = s
	return s.rt.call(ctx, s.pool, tool, args, o)
}

// Stream runs a streaming tool on the session's worker, as Runtime.Stream
// does.
func (s *Session) Stream(ctx context.Context, tool string, args any, opts ...CallOption) iter.Seq2[*Result, error] {
	if err := s.usable(tool); err != nil {
		return func(yield func(*Result, error) bool) { yield(nil, err) }
	}
	o := callOptions(opts)
	o.session = s
	return s.rt.stream(ctx, s.pool, tool, args, o)
}

func (s *Session) usable(tool string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return callError(s.pool, tool, ErrSessionLost, "session "+s.id+" was closed")
	}
	return nil
}

// Close ends the session and returns once its worker has run the adapter's
// on_session_end hook (an error says if the hook raised). Calls of the
// session still queued fail with ErrSessionLost. Closing again, or closing
// a session that expired or was lost, returns nil.
func (s *Session) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	pid, err := s.rt.pool(s.pool)
	if err != nil {
		if errors.Is(err, ErrStopped) {
			return nil // the workers ran the end hooks as they stopped
		}
		return err
	}
	closed, err := askFor[*actors.SessionClosed](ctx, s.rt, pid, &actors.CloseSession{ID: s.id})
	if err != nil {
		return fmt.Errorf("snakepit: pool %q: close session %s: %w", s.pool, s.id, err)
	}
	switch {
	case closed.Err != nil:
		return fmt.Errorf("snakepit: pool %q: close session %s: %w", s.pool, s.id, closed.Err)
	case closed.HookError != "":
		return fmt.Errorf("snakepit: pool %q: session %s: on_session_end raised:\n%s", s.pool, s.id, closed.HookError)
	}
	return nil
}

// observe notes where a call of the session ran.
func (s *Session) observe(res *Result, _ error) {
	if res == nil || res.worker == "" {
		return
	}
	s.mu.Lock()
	s.worker = res.worker
	s.mu.Unlock()
}

// strictID is the session id when its worker's death loses it.
func (s *Session) strictID() string {
	if s == nil || s.mode == SessionHint {
		return ""
	}
	return s.id
}
