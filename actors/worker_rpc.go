package actors

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/snakepit-go/snakepit/pyworker"
)

// A worker's RPCs other than calls: the queries (DescribeQuery,
// StatsQuery) and the end hook of a session. None takes a worker's
// capacity; each runs in a goroutine that answers by message.

// queryTimeout bounds one Describe or Stats RPC.
const queryTimeout = 10 * time.Second

// answerQuery runs a query's RPC in a goroutine and answers its sender.
func (w *workerActor) answerQuery(ctx actor.Context, q any) {
	sender, root, h, id := ctx.Sender(), ctx.ActorSystem().Root, w.h, w.slot.id
	if h == nil {
		err := fmt.Errorf("worker %s is not ready", id)
		root.Send(sender, answer(q, id, h, err))
		return
	}
	go func() {
		root.Send(sender, answer(q, id, h, nil))
	}()
}

func answer(q any, id string, h *pyworker.Handle, err error) any {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	switch q.(type) {
	case *DescribeQuery:
		if err != nil {
			return &DescribeAnswer{Err: err}
		}
		r, err := h.Conn.Describe(ctx)
		return &DescribeAnswer{Reply: r, Err: err}
	default:
		if err != nil {
			return &StatsAnswer{Worker: id, Err: err}
		}
		r, err := h.Conn.Stats(ctx)
		return &StatsAnswer{Worker: id, Reply: r, Err: err}
	}
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
	conn, timeout, log := w.h.Conn, w.slot.settings.ShutdownGrace+w.wd.policy.HealthTimeout, w.slot.log
	go func() {
		c, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		r, err := conn.EndSession(c, m.id)
		if err != nil {
			log.Warn("session end hook did not run", "session", m.id, "error", err)
			done(&SessionClosed{Err: fmt.Errorf("the worker did not run the end hook of session %s: %w", m.id, err)})
			return
		}
		if r.GetHookError() != "" {
			log.Warn("session end hook raised", "session", m.id, "error", r.GetHookError())
		}
		done(&SessionClosed{Ended: r.GetEnded(), HookError: r.GetHookError()})
	}()
}
