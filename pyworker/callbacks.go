package pyworker

import (
	"context"
	"errors"
	"fmt"

	"github.com/snakepit-go/snakepit/pyworker/pb"
)

// Callback error kinds (docs/wire-format.md, Callbacks).
const (
	cbUnknown      = "UNKNOWN_CALLBACK"
	cbBadArguments = "BAD_ARGUMENTS"
	cbHandlerError = "HANDLER_ERROR"
	cbPanic        = "HANDLER_PANIC"
	cbTooLarge     = "TOO_LARGE"
)

// parentCall is an in-flight call that callbacks may name as their parent.
type parentCall struct {
	ctx context.Context
	key uint64 // which call registered it: a later call with the same id replaces it
}

// parents maps the request ids of in-flight calls to their contexts. Its
// owner guards it with a lock. A call without a request id is not
// registered: a callback naming no parent gets a cancelled context.
type parents map[string]parentCall

func (p parents) add(id string, ctx context.Context, key uint64) {
	if id != "" {
		p[id] = parentCall{ctx: ctx, key: key}
	}
}

func (p parents) remove(id string, key uint64) {
	if pc, ok := p[id]; ok && pc.key == key {
		delete(p, id)
	}
}

func (p parents) context(id string) context.Context {
	if pc, ok := p[id]; ok {
		return pc.ctx
	}
	return parentOver
}

// errParentOver is the cause of the context a callback gets when its parent
// call is unknown or over.
var errParentOver = errors.New("the call that made this callback is not in flight")

var parentOver = func() context.Context {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errParentOver)
	return ctx
}()

// runCallback runs fn for req with a context derived from parent that also
// ends with the connection (connDone). It never fails: a missing handler, a
// nil reply and a panic become error replies. The reply is a new message
// with req's id (the handler's own is left as it is: it may share it).
func runCallback(parent, connDone context.Context, fn CallbackFunc, req *pb.CallbackRequest) (reply *pb.CallbackReply) {
	defer func() {
		if r := recover(); r != nil {
			reply = callbackFailure(cbPanic, fmt.Sprintf("callback %q panicked: %v", req.GetName(), r))
		}
		reply = &pb.CallbackReply{Id: req.GetId(), Outcome: reply.GetOutcome()}
	}()
	if fn == nil {
		return callbackFailure(cbUnknown, fmt.Sprintf("no callbacks are registered for this pool (called %q)", req.GetName()))
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	stop := context.AfterFunc(connDone, cancel)
	defer stop()
	reply = fn(ctx, req.GetParentRequestId(), req)
	if reply == nil {
		return callbackFailure(cbHandlerError, fmt.Sprintf("callback %q: the handler returned no reply", req.GetName()))
	}
	if e, ok := reply.GetOutcome().(*pb.CallbackReply_Error); ok && e.Error.GetKind() == "" {
		return callbackFailure(cbHandlerError, e.Error.GetMessage())
	}
	return reply
}

func callbackFailure(kind, message string) *pb.CallbackReply {
	return &pb.CallbackReply{Outcome: &pb.CallbackReply_Error{Error: &pb.CallbackError{Kind: kind, Message: message}}}
}

func tooLargeReply(req *pb.CallbackRequest, size, limit int) *pb.CallbackReply {
	r := callbackFailure(cbTooLarge, fmt.Sprintf("callback %q: the result is %d bytes, over the message limit of %d", req.GetName(), size, limit))
	r.Id = req.GetId()
	return r
}
