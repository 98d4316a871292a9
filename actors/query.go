package actors

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/snakepit-go/snakepit/pyworker"
	wpb "github.com/snakepit-go/snakepit/pyworker/pb"
)

// queryTimeout bounds one Describe or Stats RPC.
const queryTimeout = 10 * time.Second

// Queries answered by a worker; a pool forwards a DescribeQuery to one of its
// ready workers. They never take a worker's capacity.
type (
	// DescribeQuery is answered with *DescribeAnswer.
	DescribeQuery struct{}
	// DescribeAnswer lists the adapter's tools.
	DescribeAnswer struct {
		Reply *wpb.DescribeReply
		Err   error
	}
	// StatsQuery is answered with *StatsAnswer.
	StatsQuery struct{}
	// StatsAnswer is what the worker's Python process reports.
	StatsAnswer struct {
		Worker string
		Reply  *wpb.StatsReply
		Err    error
	}
)

// forwardDescribe sends a DescribeQuery on to a ready worker.
func (p *poolActor) forwardDescribe(ctx actor.Context) {
	for _, w := range p.workers {
		if w.ready {
			ctx.Forward(w.pid)
			return
		}
	}
	ctx.Respond(&DescribeAnswer{Err: fmt.Errorf("pool %q has no ready worker to describe its tools", p.s.Name)})
}

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
