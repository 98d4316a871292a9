package actors

import (
	"context"
	"errors"
	"time"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	"github.com/snakepit-go/snakepit/pyworker"
	wpb "github.com/snakepit-go/snakepit/pyworker/pb"
)

// StreamOpened answers a CallRequest with a stream window: the stream is
// running on Worker. The caller reads it directly (chunks do not pass
// through any actor); the worker's runner holds the worker's slot until
// Python has acknowledged the stream's end.
type StreamOpened struct {
	Stream pyworker.Stream
	Worker string
	// ReboundFrom: a hint-mode session moved from this worker for the call.
	ReboundFrom string
	// Failure delivers, once the stream is over, the runtime's account of a
	// stream that ended without Python's answer (its worker died, its
	// connection failed, or it did not acknowledge a cancel in time); it is
	// closed without a value when Python answered.
	Failure <-chan *apb.Failure
}

// ackWait bounds how long a stream whose caller gave up waits for Python's
// acknowledgement before the watchdog takes over (as for an abandoned call).
const ackWait = time.Second

// stream runs a streaming call: the caller gets the stream at once, and
// the slot stays taken until the worker's final answer.
func (r *runner) stream(j job) {
	defer j.cancel()
	began := time.Now()
	req := j.d.req.GetExecute()
	st, err := r.h.Conn.ExecuteStream(j.ctx, req, int(j.d.req.GetStreamWindow()))
	if err != nil {
		r.finish(j, &apb.CallReply{RequestId: req.GetRequestId(), Failure: r.classifyFailure(j.ctx, err)}, began)
		return
	}
	failure := make(chan *apb.Failure, 1)
	r.root.Send(j.d.caller, &StreamOpened{Stream: st, Worker: r.id, ReboundFrom: j.d.reboundFrom, Failure: failure})
	awaitStreamEnd(j.ctx, st)
	reply, acked := r.streamReply(j.ctx, req, st)
	if f := reply.GetFailure(); f != nil {
		r.annotateCrash(f)
		failure <- f
	}
	close(failure)
	if acked {
		// Python answered: nothing runs for this stream any more.
		r.root.Send(r.parent, &slotFreed{worker: r.self, gen: r.gen, id: req.GetRequestId()})
	} else {
		r.release(req, reply)
	}
	r.root.Send(r.self, &callDone{id: req.GetRequestId()})
	r.requestExecuted(req.GetTool(), began, reply)
}

// awaitStreamEnd waits for the worker's final answer; once the caller gave
// up, or the deadline passed (Python was told), for at most ackWait more.
func awaitStreamEnd(ctx context.Context, st pyworker.Stream) {
	select {
	case <-st.Done():
	case <-ctx.Done():
		t := time.NewTimer(ackWait)
		defer t.Stop()
		select {
		case <-st.Done():
		case <-t.C:
		}
	}
}

// streamReply is how a stream ended; acked when Python answered.
func (r *runner) streamReply(ctx context.Context, req *wpb.ExecuteRequest, st pyworker.Stream) (*apb.CallReply, bool) {
	reply := &apb.CallReply{RequestId: req.GetRequestId(), WorkerId: r.id}
	select {
	case <-st.Done():
	default:
		reply.Failure = r.classifyFailure(ctx, context.Cause(ctx))
		return reply, false
	}
	var remote *pyworker.RemoteError
	switch err := st.Err(); {
	case err == nil:
		reply.Reply = &wpb.ExecuteReply{RequestId: req.GetRequestId()}
	case errors.As(err, &remote):
		reply.Reply = &wpb.ExecuteReply{RequestId: req.GetRequestId(), Outcome: &wpb.ExecuteReply_Error{Error: remote.Info}}
	default:
		reply.Failure = r.classifyFailure(ctx, err)
		return reply, false
	}
	return reply, true
}

type originKey struct{}

// withOrigin makes every callback served for worker id carry it in its
// context, so that a call made from the handler knows where it came from.
func withOrigin(f pyworker.CallbackFunc, id string) pyworker.CallbackFunc {
	if f == nil {
		return nil
	}
	return func(ctx context.Context, parent string, req *wpb.CallbackRequest) *wpb.CallbackReply {
		return f(context.WithValue(ctx, originKey{}, id), parent, req)
	}
}

// OriginWorker is the worker whose tool made the callback being served in
// ctx ("" outside a callback handler).
func OriginWorker(ctx context.Context) string {
	id, _ := ctx.Value(originKey{}).(string)
	return id
}
