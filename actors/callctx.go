package actors

import (
	"context"
	"sync"
	"time"
)

// callCtx is the context a worker runs one call under (Python's call, the
// callbacks it makes). It ends with context.DeadlineExceeded at the call's
// deadline, and when the caller gives up (cancel): with DeadlineExceeded
// too if the deadline has passed by then. The caller's own context and this
// one share the deadline, so whichever timer fires first, a deadline is
// told as a deadline — to the callback handlers, to Python and to the
// caller — never as a cancellation.
//
// It implements the AfterFunc method the context package looks for, so a
// context derived from it costs no goroutine.
type callCtx struct {
	deadline time.Time // zero: none
	done     chan struct{}

	mu    sync.Mutex
	timer *time.Timer
	err   error
	after map[*afterFunc]struct{}
}

type afterFunc struct{ f func() }

// callContext returns the context of a call whose deadline is
// deadlineUnixNano (0: none), and the function to call when its caller
// gives up or it is over.
func callContext(deadlineUnixNano int64) (context.Context, context.CancelFunc) {
	c := &callCtx{done: make(chan struct{})}
	if deadlineUnixNano != 0 {
		c.deadline = time.Unix(0, deadlineUnixNano)
		c.mu.Lock() // the timer may fire before it is stored
		c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.end(context.DeadlineExceeded) })
		c.mu.Unlock()
	}
	return c, c.cancel
}

// cancel ends the call because its caller gave up, or because it is over.
func (c *callCtx) cancel() {
	if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		c.end(context.DeadlineExceeded)
		return
	}
	c.end(context.Canceled)
}

func (c *callCtx) end(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	after, timer := c.after, c.timer
	c.after = nil
	close(c.done)
	c.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	for a := range after {
		go a.f()
	}
}

func (c *callCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }
func (c *callCtx) Done() <-chan struct{}       { return c.done }
func (c *callCtx) Value(any) any               { return nil }

func (c *callCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// AfterFunc runs f in a goroutine of its own once c ends; stop unregisters
// it and reports whether it did so before f was started.
func (c *callCtx) AfterFunc(f func()) (stop func() bool) {
	a := &afterFunc{f: f}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	if c.after == nil {
		c.after = map[*afterFunc]struct{}{}
	}
	c.after[a] = struct{}{}
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, waiting := c.after[a]
		delete(c.after, a)
		return waiting
	}
}
