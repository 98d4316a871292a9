package pyworker

import (
	"context"
	"fmt"
	"io"

	"github.com/snakepit-go/snakepit/pyworker/pb"
	"github.com/snakepit-go/snakepit/pyworker/wire"
)

// nativeStream is a streaming call on a native connection: EXECUTE with
// "stream", answered by CHUNKs the connection's reader buffers, then one
// RESULT (empty) or ERROR.
type nativeStream struct {
	*chunkStream
	n  *nativeConn
	id uint64
}

func (s *nativeStream) sendCredit(k uint32) {
	if err := s.n.write(wire.Credit, 0, s.id, wire.CreditBody(k)); err != nil {
		s.n.fail(fmt.Errorf("write to worker: %w", err))
	}
}

func (s *nativeStream) sendCancel() {
	if err := s.n.write(wire.Cancel, 0, s.id); err != nil {
		s.n.fail(fmt.Errorf("write to worker: %w", err))
	}
}

// final ends the stream with its last frame: RESULT with an empty body (the
// generator finished) or ERROR. Anything else is a bad frame.
func (s *nativeStream) final(f frame) error {
	switch f.h.Type {
	case wire.Result:
		if len(f.body) != 0 || f.h.Flags != 0 {
			return &wire.FrameError{Problem: fmt.Sprintf("RESULT with a %d-byte body ends stream %d (a stream's RESULT is empty)", len(f.body), s.id)}
		}
		s.finish(io.EOF)
	case wire.Error:
		info, err := decodeErrorInfo(f.body)
		if err != nil {
			return &wire.FrameError{Problem: err.Error()}
		}
		s.finish(&RemoteError{Info: info})
	default:
		return &wire.FrameError{Problem: fmt.Sprintf("%s where a stream's answer was due", f.h.Type)}
	}
	return nil
}

// ExecuteStream sends EXECUTE with "stream": window. The stream stays
// registered until its final frame (or the connection's end), also after a
// cancel: chunks in flight are still counted against its credit.
func (n *nativeConn) ExecuteStream(ctx context.Context, req *pb.ExecuteRequest, window int) (Stream, error) {
	if err := checkWindow(window); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	parts, size := wire.ExecuteBodyWith(req.GetRequestId(), req.GetTool(), req.GetDeadlineUnixNano(), req.GetArgsJson(),
		req.GetBinaryArgs(), wire.ExecuteOptions{Session: req.GetSessionId(), Stream: window})
	if size > n.maxBody {
		return nil, fmt.Errorf("%w: the request is %d bytes", ErrMessageTooLarge, size)
	}
	id := n.next.Add(1)
	s := &nativeStream{n: n, id: id}
	s.chunkStream = newChunkStream(window, s)
	w := waiter{st: s}
	if n.callbacks != nil {
		w.parent = req.GetRequestId()
	}
	n.mu.Lock()
	if n.err != nil {
		n.mu.Unlock()
		return nil, n.err
	}
	n.pending[id] = w
	if w.parent != "" {
		n.parents.add(w.parent, ctx, id)
	}
	n.mu.Unlock()
	if err := n.write(wire.Execute, 0, id, parts...); err != nil {
		n.fail(fmt.Errorf("write to worker: %w", err))
		return nil, n.failure()
	}
	s.watch(ctx, s.Cancel) // after EXECUTE: a CANCEL never overtakes its call
	return s, nil
}
