package snakepit_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
)

type sessionInfo struct {
	ID    string `json:"id"`
	Pid   int    `json:"pid"`
	Calls int    `json:"calls"`
}

func openSession(t *testing.T, rt *snakepit.Runtime, pool string, mode snakepit.SessionMode) *snakepit.Session {
	t.Helper()
	s, err := rt.OpenSession(callCtx(t), pool, snakepit.SessionOptions{Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSessionFirstCallsShareOneWorker: 20 calls at once, the first of a new
// strict session, all run in one worker process, and the session's state
// sees every one of them.
func TestSessionFirstCallsShareOneWorker(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 4))
		s := openSession(t, rt, "p", snakepit.SessionStrict)
		var mu sync.Mutex
		var infos []sessionInfo
		var wg sync.WaitGroup
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := s.Call(callCtx(t), "session_info", nil)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				infos = append(infos, decodeAs[sessionInfo](t, r))
				mu.Unlock()
			}()
		}
		wg.Wait()
		var calls []int
		for _, in := range infos {
			if in.Pid != infos[0].Pid || in.ID != s.ID() {
				t.Fatalf("calls of one session ran in pids %d and %d (ids %q, %q)", infos[0].Pid, in.Pid, in.ID, s.ID())
			}
			calls = append(calls, in.Calls)
		}
		slices.Sort(calls)
		if len(calls) != 20 || calls[0] != 1 || calls[19] != 20 {
			t.Fatalf("the session state counted %v", calls)
		}
		if err := s.Close(callCtx(t)); err != nil {
			t.Fatal(err)
		}
	})
}

// TestSessionLostWhenItsWorkerDies: after SIGKILL of the session's worker,
// strict calls get ErrSessionLost, the one that was running too.
func TestSessionLostWhenItsWorkerDies(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		defer checkNoLeaks(t)()
		rt := startStoppable(t, pool(t, "p", "echo_tools", 2))
		s := openSession(t, rt, "p", snakepit.SessionStrict)
		r, err := s.Call(callCtx(t), "session_info", nil)
		if err != nil {
			t.Fatal(err)
		}
		pid := decodeAs[sessionInfo](t, r).Pid
		running := make(chan error, 1)
		go func() {
			_, err := s.Call(callCtx(t), "sleep", map[string]any{"seconds": 30})
			running <- err
		}()
		waitFor(t, "the sleep to run", 10*time.Second, func() bool {
			for _, w := range health(t, rt, "p").Workers {
				if w.Pid == pid && w.Load == 1 {
					return true
				}
			}
			return false
		})
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err = <-running
		if !errors.Is(err, snakepit.ErrSessionLost) || !errors.Is(err, snakepit.ErrWorkerCrashed) {
			t.Fatalf("the running call got %v, want ErrSessionLost and ErrWorkerCrashed", err)
		}
		if _, err := s.Call(callCtx(t), "session_info", nil); !errors.Is(err, snakepit.ErrSessionLost) {
			t.Fatalf("the next call got %v, want ErrSessionLost", err)
		}
		// The pool serves others, and new sessions.
		s2 := openSession(t, rt, "p", snakepit.SessionStrict)
		if _, err := s2.Call(callCtx(t), "session_info", nil); err != nil {
			t.Fatal(err)
		}
		must(t, rt.Stop(callCtx(t)))
	})
}

// TestSessionHintRebinds: a hint session whose worker is busy runs its call
// on another worker, and says so; a strict-fail-fast one fails at once.
func TestSessionHintRebinds(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 2))
		for _, mode := range []snakepit.SessionMode{snakepit.SessionHint, snakepit.SessionStrictFailFast} {
			s := openSession(t, rt, "p", mode)
			first := s.Worker()
			busy := make(chan error, 1)
			go func() {
				_, err := s.Call(callCtx(t), "sleep", map[string]any{"seconds": 1})
				busy <- err
			}()
			waitFor(t, "the session's worker to be busy", 10*time.Second, func() bool {
				for _, w := range health(t, rt, "p").Workers {
					if w.ID == first && w.Load == 1 {
						return true
					}
				}
				return false
			})
			r, err := s.Call(callCtx(t), "session_info", nil)
			switch mode {
			case snakepit.SessionHint:
				if err != nil {
					t.Fatal(err)
				}
				if r.ReboundFrom() != first || r.Worker() == first || s.Worker() != r.Worker() {
					t.Fatalf("rebound from %q to %q (session now on %q); it was on %q", r.ReboundFrom(), r.Worker(), s.Worker(), first)
				}
			default:
				if !errors.Is(err, snakepit.ErrSessionBusy) {
					t.Fatalf("strict-fail-fast on a busy worker: got %v, want ErrSessionBusy", err)
				}
			}
			if err := <-busy; err != nil {
				t.Fatal(err)
			}
			must(t, s.Close(callCtx(t)))
		}
	})
}

// TestSessionCloseRunsTheEndHook: Close returns once Python's end hook ran;
// the session is then gone.
func TestSessionCloseRunsTheEndHook(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		rt, _ := start(t, pool(t, "p", "echo_tools", 1))
		s := openSession(t, rt, "p", snakepit.SessionStrict)
		if _, err := s.Call(callCtx(t), "session_info", nil); err != nil {
			t.Fatal(err)
		}
		ids := func(tool string) []string {
			r, err := rt.Call(callCtx(t), "p", tool, nil)
			if err != nil {
				t.Fatal(err)
			}
			return decodeAs[[]string](t, r)
		}
		if !slices.Contains(ids("started_sessions"), s.ID()) || slices.Contains(ids("ended_sessions"), s.ID()) {
			t.Fatalf("before Close: started %v, ended %v", ids("started_sessions"), ids("ended_sessions"))
		}
		must(t, s.Close(callCtx(t)))
		if !slices.Contains(ids("ended_sessions"), s.ID()) {
			t.Fatalf("Close returned before the end hook ran: ended %v", ids("ended_sessions"))
		}
		if _, err := s.Call(callCtx(t), "session_info", nil); !errors.Is(err, snakepit.ErrSessionLost) {
			t.Fatalf("a call after Close: got %v, want ErrSessionLost", err)
		}
		must(t, s.Close(callCtx(t))) // again: nothing to do
	})
}

// TestSessionIdleExpiry: a session idle past IdleTTL is closed (its end
// hook runs); later calls get ErrSessionLost.
func TestSessionIdleExpiry(t *testing.T) {
	p := pool(t, "p", "echo_tools", 1)
	p.Sessions.IdleTTL = 200 * time.Millisecond
	rt, _ := start(t, p)
	s := openSession(t, rt, "p", snakepit.SessionStrict)
	if _, err := s.Call(callCtx(t), "session_info", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session to expire", 10*time.Second, func() bool {
		r, err := rt.Call(callCtx(t), "p", "ended_sessions", nil)
		return err == nil && slices.Contains(decodeAs[[]string](t, r), s.ID())
	})
	if _, err := s.Call(callCtx(t), "session_info", nil); !errors.Is(err, snakepit.ErrSessionLost) {
		t.Fatalf("a call after expiry: got %v, want ErrSessionLost", err)
	}
}

// TestSessionPlacementAndLimits: sessions go to the worker holding the
// fewest; MaxPerWorker and MaxSessions refuse more with ErrSessionLimit.
func TestSessionPlacementAndLimits(t *testing.T) {
	p := pool(t, "p", "echo_tools", 3)
	p.Sessions = snakepit.SessionPolicy{MaxPerWorker: 2}
	q := pool(t, "q", "echo_tools", 1)
	q.Sessions = snakepit.SessionPolicy{MaxSessions: 1}
	rt, _ := start(t, p, q)
	for range 6 {
		openSession(t, rt, "p", snakepit.SessionStrict)
	}
	for _, w := range health(t, rt, "p").Workers {
		if w.Sessions != 2 {
			t.Fatalf("worker %s holds %d sessions; 6 over 3 workers should be 2 each", w.ID, w.Sessions)
		}
	}
	if _, err := rt.OpenSession(callCtx(t), "p", snakepit.SessionOptions{}); !errors.Is(err, snakepit.ErrSessionLimit) {
		t.Fatalf("a 7th session with MaxPerWorker 2 on 3 workers: got %v", err)
	}
	openSession(t, rt, "q", snakepit.SessionHint)
	if _, err := rt.OpenSession(callCtx(t), "q", snakepit.SessionOptions{}); !errors.Is(err, snakepit.ErrSessionLimit) {
		t.Fatalf("a 2nd session with MaxSessions 1: got %v", err)
	}
	if _, err := rt.OpenSession(callCtx(t), "q", snakepit.SessionOptions{Mode: "sticky"}); !errors.Is(err, snakepit.ErrBadArguments) {
		t.Fatalf("an unknown mode: got %v", err)
	}
	if _, err := rt.OpenSession(callCtx(t), "nope", snakepit.SessionOptions{}); !errors.Is(err, snakepit.ErrUnknownPool) {
		t.Fatalf("an unknown pool: got %v", err)
	}
}

// TestSessionKeepsARecycledWorker: a worker recycled while it holds a strict
// session keeps serving it until it closes; then it goes.
func TestSessionKeepsARecycledWorker(t *testing.T) {
	rt, _ := start(t, pool(t, "p", "echo_tools", 1))
	s := openSession(t, rt, "p", snakepit.SessionStrict)
	r, err := s.Call(callCtx(t), "session_info", nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := decodeAs[sessionInfo](t, r).Pid
	worker := s.Worker()
	recycled := make(chan error, 1)
	go func() { recycled <- rt.Recycle(context.Background(), "p", worker) }()
	waitFor(t, "the replacement to be ready", 30*time.Second, func() bool {
		for _, w := range health(t, rt, "p").Workers {
			if w.ID == worker && w.Retiring {
				return true
			}
		}
		return false
	})
	r, err = s.Call(callCtx(t), "session_info", nil)
	if err != nil {
		t.Fatal(err)
	}
	if in := decodeAs[sessionInfo](t, r); in.Pid != pid || in.Calls != 2 {
		t.Fatalf("after the recycle began the session ran in pid %d (call %d); it lives in pid %d", in.Pid, in.Calls, pid)
	}
	select {
	case err := <-recycled:
		t.Fatalf("Recycle returned (%v) while the worker still held a session", err)
	default:
	}
	must(t, s.Close(callCtx(t)))
	if err := <-recycled; err != nil {
		t.Fatal(err)
	}
	if r, err := rt.Call(callCtx(t), "p", "pid", nil); err != nil || decodeAs[int](t, r) == pid {
		t.Fatalf("after Close the old worker should be gone: %v", err)
	}
}
