package actors

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestCallContextEndsWithItsDeadline(t *testing.T) {
	ctx, cancel := callContext(time.Now().Add(20 * time.Millisecond).UnixNano())
	defer cancel()
	child, stop := context.WithCancel(ctx)
	defer stop()
	<-child.Done()
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) || !errors.Is(child.Err(), context.DeadlineExceeded) {
		t.Fatalf("call ctx %v, derived ctx %v: want DeadlineExceeded for both", ctx.Err(), child.Err())
	}
}

// A caller's cancel that arrives once the deadline has passed (its own
// deadline timer fired first) is told as the deadline, not a cancellation.
func TestCallContextCancelPastTheDeadlineIsTheDeadline(t *testing.T) {
	deadline := time.Now().Add(time.Hour)
	ctx, cancel := callContext(deadline.UnixNano())
	c := ctx.(*callCtx)
	c.mu.Lock()
	c.timer.Stop() // as if the timer had not fired yet
	c.mu.Unlock()
	c.deadline = time.Now().Add(-time.Millisecond)
	child, stop := context.WithCancel(ctx)
	defer stop()
	cancel()
	<-child.Done()
	if !errors.Is(child.Err(), context.DeadlineExceeded) {
		t.Fatalf("derived ctx ended with %v, want DeadlineExceeded", child.Err())
	}
}

func TestCallContextCancelBeforeTheDeadline(t *testing.T) {
	for _, dl := range []int64{0, time.Now().Add(time.Hour).UnixNano()} {
		ctx, cancel := callContext(dl)
		_, has := ctx.Deadline()
		if has != (dl != 0) {
			t.Fatalf("deadline %d: Deadline() reports %v", dl, has)
		}
		fired := make(chan struct{})
		context.AfterFunc(ctx, func() { close(fired) })
		cancel()
		<-fired
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("deadline %d: ended with %v, want Canceled", dl, ctx.Err())
		}
		cancel() // a second end changes nothing
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("a second cancel changed the error to %v", ctx.Err())
		}
	}
}

func TestCallContextAfterFuncStop(t *testing.T) {
	ctx, cancel := callContext(0)
	ran := make(chan struct{}, 1)
	stop := context.AfterFunc(ctx, func() { ran <- struct{}{} })
	if !stop() {
		t.Fatal("stop before the end reports false")
	}
	cancel()
	late := make(chan struct{})
	context.AfterFunc(ctx, func() { close(late) }) // registered after the end: runs at once
	<-late
	select {
	case <-ran:
		t.Fatal("a stopped AfterFunc ran")
	default:
	}
}
