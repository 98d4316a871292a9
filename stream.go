package snakepit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/snakepit-go/snakepit/actors"
	apb "github.com/snakepit-go/snakepit/actors/pb"
	"github.com/snakepit-go/snakepit/pyworker"
)

// breakAckWait bounds how long a loop that breaks out of a Stream waits for
// Python to acknowledge the generator's close; past it the loop goes on and
// the worker's watchdog deals with a generator that will not close.
const breakAckWait = time.Second

// Stream runs a streaming tool (a Python generator function, sync or async;
// a plain tool's return value is its one chunk) and yields its items as they
// come, each as a *Result:
//
//	for chunk, err := range rt.Stream(ctx, "default", "tokens", args) {
//		if err != nil {
//			return err // the chunks before it were good
//		}
//		var tok string
//		_ = chunk.Decode(&tok)
//	}
//
// Every item is delivered as soon as Python yields it. At most Window(n)
// items (default DefaultWindow) are in flight: Python's generator is not
// asked for more while the consumer has not taken them, so a slow loop slows
// the producer and memory stays bounded. The worker's slot stays taken for
// the whole stream.
//
// The last iteration carries the error, if the stream fails: a *PythonError
// with its traceback when the generator raised, or any error Call returns.
// Breaking out of the loop, or ctx ending, stops the stream: the generator
// is closed on the thread that runs it, so its finally blocks run, and the
// worker is given back only once Python has acknowledged; a break waits for
// that acknowledgement (up to a second). ctx bounds the whole stream (or
// Config.CallTimeout when ctx has no deadline). Idempotent does not apply.
// Each range over the sequence runs the tool anew.
func (rt *Runtime) Stream(ctx context.Context, pool, tool string, args any, opts ...CallOption) iter.Seq2[*Result, error] {
	return rt.stream(ctx, pool, tool, args, callOptions(opts))
}

func (rt *Runtime) stream(ctx context.Context, pool, tool string, args any, o callOpts) iter.Seq2[*Result, error] {
	return func(yield func(*Result, error) bool) {
		s, err := rt.openStream(ctx, pool, tool, args, o)
		if err != nil {
			yield(nil, err)
			return
		}
		defer s.stop()
		for {
			res, err := s.next()
			if err == io.EOF {
				s.finished = true
				return
			}
			if err != nil {
				yield(nil, err)
				return
			}
			if !yield(res, nil) {
				return
			}
		}
	}
}

// openStream is one stream being consumed.
type openStream struct {
	rt          *Runtime
	ctx         context.Context
	cancel      context.CancelFunc
	pid         *actor.PID
	pool, tool  string
	requestID   string
	session     *Session
	st          pyworker.Stream
	worker      string
	reboundFrom string
	failure     <-chan *apb.Failure
	finished    bool // Python answered the end: nothing to stop
}

func (rt *Runtime) openStream(ctx context.Context, pool, tool string, args any, o callOpts) (*openStream, error) {
	window := o.window
	if window == 0 {
		window = DefaultWindow
	}
	if window < 1 || window > pyworker.MaxStreamWindow {
		return nil, callError(pool, tool, ErrBadArguments, fmt.Sprintf("Window(%d): a stream's window must be between 1 and %d chunks",
			window, pyworker.MaxStreamWindow))
	}
	pid, req, err := rt.newRequest(ctx, pool, tool, args, o)
	if err != nil {
		return nil, err
	}
	req.StreamWindow = uint32(window)
	s := &openStream{rt: rt, pid: pid, pool: pool, tool: tool, requestID: req.GetExecute().GetRequestId(), session: o.session}
	s.ctx, s.cancel = ctx, func() {}
	if _, has := ctx.Deadline(); !has {
		s.ctx, s.cancel = context.WithTimeout(ctx, rt.cfg.CallTimeout)
	}
	deadline, _ := s.ctx.Deadline()
	req.Execute.DeadlineUnixNano = wireDeadline(deadline)

	box := actors.NewReplyBox(rt.system)
	defer box.Release()
	rt.system.Root.RequestWithCustomSender(pid, req, box.PID())
	select {
	case r := <-box.C():
		switch r := r.(type) {
		case *actors.StreamOpened:
			s.st, s.worker, s.reboundFrom, s.failure = r.Stream, r.Worker, r.ReboundFrom, r.Failure
			if o.session != nil {
				o.session.observe(&Result{worker: r.Worker, reboundFrom: r.ReboundFrom}, nil)
			}
			return s, nil
		case *apb.CallReply: // refused, or failed before it started
			s.cancel()
			res, err := decodeReply(pool, tool, o.session.strictID(), r)
			if o.session != nil {
				o.session.observe(res, err)
			}
			if err == nil { // cannot happen: a stream starts or fails
				err = callError(pool, tool, ErrTransport, "the pool answered a stream with a plain result")
			}
			return nil, err
		default:
			s.cancel()
			return nil, callError(pool, tool, ErrTransport, fmt.Sprintf("unexpected reply %T", r))
		}
	case <-s.ctx.Done():
		rt.system.Root.Send(pid, &apb.CancelCall{RequestId: s.requestID})
		err := fmt.Errorf("snakepit: %s.%s: %w", pool, tool, s.ctx.Err())
		s.cancel()
		return nil, err
	}
}

// next is the stream's next chunk, io.EOF at its end, or why it failed.
func (s *openStream) next() (*Result, error) {
	c, err := s.st.Next(s.ctx)
	if err == nil {
		if c.Raw {
			return &Result{raw: c.Data, isRaw: true, worker: s.worker, reboundFrom: s.reboundFrom}, nil
		}
		return &Result{json: c.Data, worker: s.worker, reboundFrom: s.reboundFrom}, nil
	}
	if err == io.EOF {
		return nil, io.EOF
	}
	var remote *pyworker.RemoteError
	if errors.As(err, &remote) {
		s.finished = true
		return nil, pythonFailure(s.pool, s.tool, s.worker, remote.Info)
	}
	if ctxErr := s.ctx.Err(); ctxErr != nil {
		return nil, fmt.Errorf("snakepit: %s.%s: stream stopped: %w", s.pool, s.tool, ctxErr)
	}
	// The connection failed: the worker's runner says how (a crash, most
	// likely) once it knows.
	s.finished = true
	select {
	case f, ok := <-s.failure:
		if ok && f != nil {
			return nil, failureError(s.pool, s.tool, s.worker, s.session.strictID(), f)
		}
	case <-s.ctx.Done():
	}
	return nil, callError(s.pool, s.tool, ErrTransport, err.Error())
}

// stop ends the stream if Python has not: the generator is closed, and a
// break waits (briefly) for Python's acknowledgement.
func (s *openStream) stop() {
	defer s.cancel()
	if s.finished {
		return
	}
	s.st.Cancel()
	if s.ctx.Err() != nil {
		// The caller gave up: the worker's runner waits for the
		// acknowledgement and hands a stream that never gives it to the
		// watchdog.
		s.rt.system.Root.Send(s.pid, &apb.CancelCall{RequestId: s.requestID})
		return
	}
	t := time.NewTimer(breakAckWait)
	defer t.Stop()
	select {
	case <-s.st.Done():
	case <-t.C:
		s.rt.system.Root.Send(s.pid, &apb.CancelCall{RequestId: s.requestID})
	case <-s.ctx.Done():
		s.rt.system.Root.Send(s.pid, &apb.CancelCall{RequestId: s.requestID})
	}
}
