package pyworker

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// MaxStreamWindow is the largest window ExecuteStream accepts: a stream
// buffers up to its window of chunks.
const MaxStreamWindow = 1 << 16

func checkWindow(window int) error {
	if window < 1 || window > MaxStreamWindow {
		return fmt.Errorf("stream window %d: must be between 1 and %d", window, MaxStreamWindow)
	}
	return nil
}

// streamSender is how a stream talks back to the worker.
type streamSender interface {
	sendCredit(n uint32)
	sendCancel()
}

// chunkStream is the transport-independent half of a Stream: a buffer of
// chunks the worker was given credit for, and the stream's final answer.
//
// Credit accounting: with W the window, len(ch) + credit + taken == W at all
// times, where credit is what the worker may still send and taken is what
// the consumer took since the last CREDIT. The receiver checks credit
// before it buffers a chunk, so ch (of capacity W) never blocks it.
type chunkStream struct {
	ch     chan Chunk
	done   chan struct{}
	batch  int32        // a CREDIT is sent once this many chunks were taken
	credit atomic.Int32 // chunks the worker may still send
	taken  atomic.Int32 // chunks taken since the last CREDIT
	send   streamSender

	mu        sync.Mutex
	err       error // the final answer; set before done is closed
	finished  bool
	cancelled bool
	stopWatch func() bool // unregisters the ctx watch
}

func newChunkStream(window int, send streamSender) *chunkStream {
	s := &chunkStream{ch: make(chan Chunk, window), done: make(chan struct{}), batch: int32(max(1, window/2)), send: send}
	s.credit.Store(int32(window))
	return s
}

// errCreditExceeded: the worker sent a chunk it had no credit for.
type errCreditExceeded struct{}

func (errCreditExceeded) Error() string { return "a CHUNK beyond the stream's credit" }

// push buffers a chunk that arrived; it never blocks. It fails when the
// worker had no credit for it.
func (s *chunkStream) push(c Chunk) error {
	if s.credit.Add(-1) < 0 {
		return errCreditExceeded{}
	}
	select {
	case s.ch <- c:
		return nil
	default: // unreachable while the accounting holds
		return errCreditExceeded{}
	}
}

// finish records the final answer (io.EOF, a *RemoteError, a transport
// error) once and closes done.
func (s *chunkStream) finish(err error) {
	s.mu.Lock()
	if s.finished {
		s.mu.Unlock()
		return
	}
	s.finished, s.err = true, err
	stop := s.stopWatch
	s.mu.Unlock()
	close(s.done)
	if stop != nil {
		stop()
	}
}

// watch runs onEnd if ctx ends before the stream does.
func (s *chunkStream) watch(ctx context.Context, onEnd func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.finished {
		s.stopWatch = context.AfterFunc(ctx, onEnd)
	}
}

func (s *chunkStream) Done() <-chan struct{} { return s.done }

// Err is how the stream ended once Done is closed (nil before, and when the
// tool finished).
func (s *chunkStream) Err() error {
	select {
	case <-s.done:
	default:
		return nil
	}
	if s.err == io.EOF {
		return nil
	}
	return s.err
}

func (s *chunkStream) Next(ctx context.Context) (Chunk, error) {
	select {
	case c := <-s.ch:
		s.took()
		return c, nil
	default:
	}
	select {
	case c := <-s.ch:
		s.took()
		return c, nil
	case <-s.done:
		// Chunks are buffered before the final answer is recorded: drain them first.
		select {
		case c := <-s.ch:
			return c, nil
		default:
		}
		return Chunk{}, s.err
	case <-ctx.Done():
		return Chunk{}, ctx.Err()
	}
}

// took gives the worker credit for taken chunks, in batches of half the
// window (1 for a window of 1 or 2). The credit is counted before the CREDIT
// goes out, so a chunk sent on it is never taken for one beyond it.
func (s *chunkStream) took() {
	if s.taken.Add(1) < s.batch {
		return
	}
	s.mu.Lock()
	if s.finished || s.cancelled {
		s.mu.Unlock()
		return
	}
	n := s.taken.Swap(0)
	s.credit.Add(n)
	s.mu.Unlock()
	s.send.sendCredit(uint32(n))
}

func (s *chunkStream) Cancel() {
	s.mu.Lock()
	if s.finished || s.cancelled {
		s.mu.Unlock()
		return
	}
	s.cancelled = true
	s.mu.Unlock()
	s.send.sendCancel()
}
