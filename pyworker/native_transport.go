package pyworker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/snakepit-go/snakepit/pyworker/pb"
	"github.com/snakepit-go/snakepit/pyworker/wire"
)

// Native is the default transport: length-prefixed frames over the worker's
// Unix socket (docs/wire-format.md). Its Python side needs only the standard
// library, so it runs on any CPython ≥ 3.11, free-threaded included.
type Native struct{}

func (Native) Name() string              { return "native" }
func (Native) RequiredModules() []string { return nil }

// Dial connects and completes the HELLO exchange.
func (Native) Dial(ctx context.Context, ep Endpoint) (Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", ep.Socket)
	if err != nil {
		return nil, err
	}
	nc := &nativeConn{c: c, maxBody: ep.MaxMessageBytes + wire.MetaAllowance, maxMsg: ep.MaxMessageBytes,
		callbacks: ep.Callbacks, pending: map[uint64]waiter{}, parents: parents{},
		openCallbacks: map[uint64]struct{}{}, done: make(chan struct{})}
	if err := nc.hello(ctx, ep.Token); err != nil {
		_ = c.Close()
		return nil, err
	}
	nc.ctx, nc.cancelCtx = context.WithCancel(context.Background())
	go nc.readLoop()
	return nc, nil
}

type frame struct {
	h    wire.Header
	body []byte
}

// waiter is what waits for the frames of one stream id.
type waiter struct {
	ch     chan frame    // a call or a request: its one answer
	st     *nativeStream // a streaming call: its chunks and final answer
	parent string        // the request id registered in parents ("" for none)
}

type nativeConn struct {
	c         net.Conn
	maxBody   int // the frame limit: the message limit plus the metadata allowance
	maxMsg    int
	callbacks CallbackFunc
	next      atomic.Uint64
	wmu       sync.Mutex         // one frame written at a time
	ctx       context.Context    // ends when the connection does
	cancelCtx context.CancelFunc // ends ctx

	mu      sync.Mutex
	pending map[uint64]waiter
	// parents: request id -> context of the in-flight calls, for their
	// callbacks (filled only when there is a callback handler).
	parents parents
	// openCallbacks: the ids of the worker's callbacks not answered yet.
	openCallbacks map[uint64]struct{}
	err           error // why the connection ended; set once
	done          chan struct{}
}

func (n *nativeConn) hello(ctx context.Context, token string) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = n.c.SetDeadline(dl)
		defer n.c.SetDeadline(time.Time{})
	}
	body, _ := json.Marshal(map[string]any{"version": wire.Version, "token": token})
	if err := n.write(wire.Hello, 0, 0, body); err != nil {
		return fmt.Errorf("send HELLO: %w", err)
	}
	var hdr [wire.HeaderSize]byte
	h, reply, err := wire.ReadFrame(n.c, hdr[:], n.maxBody)
	var ve *wire.VersionError
	switch {
	case errors.As(err, &ve):
		return &ProtocolError{Worker: "", Got: int32(ve.Got)}
	case err != nil:
		return fmt.Errorf("read HELLO_OK: %w", err)
	case h.Type == wire.ProtocolError:
		return fmt.Errorf("worker refused the connection: %s", protocolErrorMessage(reply))
	case h.Type != wire.HelloOK:
		return fmt.Errorf("worker answered HELLO with %s", h.Type)
	}
	return nil
}

func protocolErrorMessage(body []byte) string {
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &m) != nil || m.Message == "" {
		return fmt.Sprintf("%q", body)
	}
	return m.Message
}

// write sends one frame: header and body parts in a single vectored write.
func (n *nativeConn) write(t wire.Type, flags uint16, stream uint64, parts ...[]byte) error {
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	var hdr [wire.HeaderSize]byte
	wire.NewHeader(t, flags, stream, size).Put(hdr[:])
	bufs := make(net.Buffers, 0, len(parts)+1)
	bufs = append(bufs, hdr[:])
	bufs = append(bufs, parts...)
	n.wmu.Lock()
	defer n.wmu.Unlock()
	_, err := bufs.WriteTo(n.c)
	return err
}

// readLoop hands every frame to the call waiting for its stream, and starts
// the callbacks the worker makes. It never blocks on a consumer: answers go
// to buffered channels, chunks to their stream's buffer (bounded by its
// credit), callbacks to goroutines of their own. A bad frame ends the
// connection: the worker is told why (best effort) and every pending call
// fails at once.
func (n *nativeConn) readLoop() {
	var hdr [wire.HeaderSize]byte
	for {
		h, body, err := wire.ReadFrame(n.c, hdr[:], n.maxBody)
		if err != nil {
			switch {
			case errors.Is(err, wire.ErrBadFrame):
				n.badFrame(err)
			case err == io.EOF: // not a stream's clean end
				n.fail(errors.New("worker closed the connection"))
			default:
				n.fail(err)
			}
			return
		}
		switch h.Type {
		case wire.ProtocolError:
			n.fail(fmt.Errorf("worker ended the connection: %s", protocolErrorMessage(body)))
			return
		case wire.Result, wire.Error, wire.Reply:
			err = n.deliver(frame{h: h, body: body})
		case wire.Chunk:
			err = n.deliverChunk(h, body)
		case wire.Callback:
			err = n.startCallback(h.Stream, body)
		default:
			err = &wire.FrameError{Problem: fmt.Sprintf("%s frame sent to the runtime", h.Type)}
		}
		if err != nil {
			n.badFrame(err)
			return
		}
	}
}

// badFrame ends the connection for a frame the worker should not have sent,
// telling it why first (best effort).
func (n *nativeConn) badFrame(err error) {
	msg, _ := json.Marshal(map[string]string{"message": err.Error()})
	_ = n.write(wire.ProtocolError, 0, 0, msg)
	n.fail(fmt.Errorf("worker sent a %w", err))
}

// deliver hands a call's answer to its caller, or ends a stream.
func (n *nativeConn) deliver(f frame) error {
	n.mu.Lock()
	w, ok := n.pending[f.h.Stream]
	if ok {
		delete(n.pending, f.h.Stream)
		n.parents.remove(w.parent, f.h.Stream)
	}
	n.mu.Unlock()
	switch {
	case !ok: // its caller gave up
		return nil
	case w.st != nil:
		err := w.st.final(f)
		if err != nil {
			w.st.finish(fmt.Errorf("worker sent a %w", err))
		}
		return err
	default:
		w.ch <- f // buffered: never blocks
		return nil
	}
}

func (n *nativeConn) deliverChunk(h wire.Header, body []byte) error {
	n.mu.Lock()
	w, ok := n.pending[h.Stream]
	n.mu.Unlock()
	if !ok || w.st == nil {
		return &wire.FrameError{Problem: fmt.Sprintf("CHUNK on stream %d, which has no streaming call in flight", h.Stream)}
	}
	if err := w.st.push(Chunk{Data: body, Raw: h.Flags&wire.FlagRaw != 0}); err != nil {
		return &wire.FrameError{Problem: fmt.Sprintf("%v on stream %d (window %d)", err, h.Stream, cap(w.st.ch))}
	}
	return nil
}

func (n *nativeConn) fail(err error) {
	n.mu.Lock()
	if n.err != nil {
		n.mu.Unlock()
		return
	}
	n.err = err
	close(n.done)
	if n.cancelCtx != nil {
		n.cancelCtx()
	}
	_ = n.c.Close()
	var streams []*nativeStream
	for id, w := range n.pending {
		if w.st != nil {
			streams = append(streams, w.st)
			delete(n.pending, id)
		}
	}
	clear(n.parents)
	n.mu.Unlock()
	for _, s := range streams {
		s.finish(err)
	}
}

func (n *nativeConn) failure() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}

// roundTrip sends one frame on a fresh stream and waits for its answer. A
// call with a request id (parent) is registered for its callbacks while it
// is in flight, when the connection has a callback handler.
func (n *nativeConn) roundTrip(ctx context.Context, t wire.Type, parent string, parts ...[]byte) (frame, error) {
	id := n.next.Add(1)
	w := waiter{ch: make(chan frame, 1)}
	ch := w.ch
	if n.callbacks != nil {
		w.parent = parent
	}
	n.mu.Lock()
	if n.err != nil {
		n.mu.Unlock()
		return frame{}, n.err
	}
	n.pending[id] = w
	if w.parent != "" {
		n.parents.add(w.parent, ctx, id)
	}
	n.mu.Unlock()
	if err := n.write(t, 0, id, parts...); err != nil {
		n.fail(fmt.Errorf("write to worker: %w", err))
		return frame{}, n.failure()
	}
	select {
	case f := <-ch:
		return f, nil
	case <-n.done:
		// readLoop delivers a frame before it can fail the connection: an
		// answer that came just before the worker closed is not lost.
		select {
		case f := <-ch:
			return f, nil
		default:
		}
		return frame{}, n.failure()
	case <-ctx.Done():
		n.mu.Lock()
		delete(n.pending, id)
		n.parents.remove(w.parent, id)
		n.mu.Unlock()
		if t == wire.Execute {
			_ = n.write(wire.Cancel, 0, id)
		}
		return frame{}, ctx.Err()
	}
}

func (n *nativeConn) Execute(ctx context.Context, req *pb.ExecuteRequest) (*pb.ExecuteReply, error) {
	parts, size := wire.ExecuteBodyWith(req.GetRequestId(), req.GetTool(), req.GetDeadlineUnixNano(), req.GetArgsJson(),
		req.GetBinaryArgs(), wire.ExecuteOptions{Session: req.GetSessionId()})
	if size > n.maxBody {
		return nil, fmt.Errorf("%w: the request is %d bytes", ErrMessageTooLarge, size)
	}
	f, err := n.roundTrip(ctx, wire.Execute, req.GetRequestId(), parts...)
	if err != nil {
		return nil, err
	}
	reply := &pb.ExecuteReply{RequestId: req.GetRequestId()}
	switch f.h.Type {
	case wire.Result:
		if f.h.Flags&wire.FlagRaw != 0 {
			reply.Outcome = &pb.ExecuteReply_ResultRaw{ResultRaw: f.body}
		} else {
			reply.Outcome = &pb.ExecuteReply_ResultJson{ResultJson: f.body}
		}
	case wire.Error:
		info, err := decodeErrorInfo(f.body)
		if err != nil {
			return nil, err
		}
		reply.Outcome = &pb.ExecuteReply_Error{Error: info}
	default:
		return nil, n.badReply(f)
	}
	return reply, nil
}

func (n *nativeConn) badReply(f frame) error {
	err := fmt.Errorf("worker sent a %w", &wire.FrameError{Problem: fmt.Sprintf("%s where a call's answer was due", f.h.Type)})
	n.fail(err)
	return err
}

func decodeErrorInfo(body []byte) (*pb.ErrorInfo, error) {
	var e struct {
		Kind, Type, Message, Traceback string
	}
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, fmt.Errorf("worker sent an unreadable ERROR body: %w", err)
	}
	return &pb.ErrorInfo{Kind: pb.ErrorInfo_Kind(pb.ErrorInfo_Kind_value["KIND_"+e.Kind]),
		Type: e.Type, Message: e.Message, Traceback: e.Traceback}, nil
}

// request runs a control op and decodes its REPLY into out.
func (n *nativeConn) request(ctx context.Context, op map[string]any, out proto.Message) error {
	body, _ := json.Marshal(op)
	f, err := n.roundTrip(ctx, wire.Request, "", body)
	if err != nil {
		return err
	}
	if f.h.Type != wire.Reply {
		return n.badReply(f)
	}
	var failed struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(f.body, &failed) == nil && failed.Error != "" {
		return fmt.Errorf("worker: %s failed: %s", op["op"], failed.Error)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(f.body, out); err != nil {
		return fmt.Errorf("worker sent an unreadable %s reply: %w", op["op"], err)
	}
	return nil
}

// EndSession sends REQUEST session_end; the worker replies once the
// session's end hook has run.
func (n *nativeConn) EndSession(ctx context.Context, id string) (*pb.EndSessionReply, error) {
	out := &pb.EndSessionReply{}
	return out, n.request(ctx, map[string]any{"op": "session_end", "session": id}, out)
}

func (n *nativeConn) Describe(ctx context.Context) (*pb.DescribeReply, error) {
	out := &pb.DescribeReply{}
	return out, n.request(ctx, map[string]any{"op": "describe"}, out)
}

func (n *nativeConn) Health(ctx context.Context) (*pb.HealthReply, error) {
	out := &pb.HealthReply{}
	return out, n.request(ctx, map[string]any{"op": "health"}, out)
}

func (n *nativeConn) Stats(ctx context.Context) (*pb.StatsReply, error) {
	out := &pb.StatsReply{}
	return out, n.request(ctx, map[string]any{"op": "stats"}, out)
}

func (n *nativeConn) Shutdown(ctx context.Context, grace time.Duration) error {
	return n.request(ctx, map[string]any{"op": "shutdown", "grace_ms": grace.Milliseconds()}, &pb.ShutdownReply{})
}

func (n *nativeConn) Close() error {
	n.fail(errors.New("connection closed"))
	return nil
}
