package pyworker

import (
	"errors"
	"fmt"

	"github.com/snakepit-go/snakepit/pyworker/pb"
	"github.com/snakepit-go/snakepit/pyworker/wire"
)

// startCallback starts serving a CALLBACK on a goroutine of its own. A body
// that does not parse (wire.ParseCallback's *FrameError) and an id already
// open are bad frames: the connection ends. Well-framed but unusable
// arguments are answered CALLBACK_ERROR BAD_ARGUMENTS.
func (n *nativeConn) startCallback(id uint64, body []byte) error {
	call, err := wire.ParseCallback(body)
	var argErr *wire.ArgumentError
	if err != nil && !errors.As(err, &argErr) {
		return err
	}
	n.mu.Lock()
	if _, open := n.openCallbacks[id]; open {
		n.mu.Unlock()
		return &wire.FrameError{Problem: fmt.Sprintf("CALLBACK %d while callback %d is not answered yet", id, id)}
	}
	n.openCallbacks[id] = struct{}{}
	parent := parentOver
	if call != nil {
		parent = n.parents.context(call.Parent)
	}
	n.mu.Unlock()
	if argErr != nil {
		go n.answerCallback(id, "", callbackFailure(cbBadArguments, argErr.Error()))
		return nil
	}
	req := &pb.CallbackRequest{Id: id, Name: call.Name, ParentRequestId: call.Parent, ArgsJson: call.Args, BinaryArgs: call.Binary}
	go func() {
		n.answerCallback(id, call.Name, runCallback(parent, n.ctx, n.callbacks, req))
	}()
	return nil
}

// answerCallback sends CALLBACK_RESULT (FlagRaw for a raw result) or
// CALLBACK_ERROR {"kind", "message"}. A result over the message limit is
// answered TOO_LARGE; an empty JSON result is sent as null.
func (n *nativeConn) answerCallback(id uint64, name string, reply *pb.CallbackReply) {
	t, flags, body := wire.CallbackResult, uint16(0), []byte("null")
	switch o := reply.GetOutcome().(type) {
	case *pb.CallbackReply_ResultJson:
		if len(o.ResultJson) > 0 {
			body = o.ResultJson
		}
	case *pb.CallbackReply_ResultRaw:
		flags, body = wire.FlagRaw, o.ResultRaw
	case *pb.CallbackReply_Error:
		t, body = wire.CallbackError, wire.CallbackErrorBody(o.Error.GetKind(), o.Error.GetMessage())
	}
	if len(body) > n.maxMsg {
		e := tooLargeReply(&pb.CallbackRequest{Id: id, Name: name}, len(body), n.maxMsg).GetError()
		t, flags, body = wire.CallbackError, 0, wire.CallbackErrorBody(e.GetKind(), e.GetMessage())
	}
	n.mu.Lock()
	delete(n.openCallbacks, id) // before the answer: the worker may reuse the id once it has it
	n.mu.Unlock()
	if err := n.write(t, flags, id, body); err != nil {
		n.fail(fmt.Errorf("write to worker: %w", err))
	}
}
