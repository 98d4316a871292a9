package pyworker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	nc := &nativeConn{c: c, maxBody: ep.MaxMessageBytes + wire.MetaAllowance,
		pending: map[uint64]chan frame{}, done: make(chan struct{})}
	if err := nc.hello(ctx, ep.Token); err != nil {
		_ = c.Close()
		return nil, err
	}
	go nc.readLoop()
	return nc, nil
}

type frame struct {
	h    wire.Header
	body []byte
}

type nativeConn struct {
	c       net.Conn
	maxBody int
	next    atomic.Uint64
	wmu     sync.Mutex // one frame written at a time

	mu      sync.Mutex
	pending map[uint64]chan frame
	err     error // why the connection ended; set once
	done    chan struct{}
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

// readLoop hands every frame to the call waiting for its stream. A bad frame
// ends the connection: the worker is told why (best effort) and every
// pending call fails at once.
func (n *nativeConn) readLoop() {
	var hdr [wire.HeaderSize]byte
	for {
		h, body, err := wire.ReadFrame(n.c, hdr[:], n.maxBody)
		if err != nil {
			if errors.Is(err, wire.ErrBadFrame) {
				msg, _ := json.Marshal(map[string]string{"message": err.Error()})
				_ = n.write(wire.ProtocolError, 0, 0, msg)
				err = fmt.Errorf("worker sent a %w", err)
			}
			n.fail(err)
			return
		}
		if h.Type == wire.ProtocolError {
			n.fail(fmt.Errorf("worker ended the connection: %s", protocolErrorMessage(body)))
			return
		}
		n.deliver(frame{h: h, body: body})
	}
}

func (n *nativeConn) deliver(f frame) {
	n.mu.Lock()
	ch, ok := n.pending[f.h.Stream]
	delete(n.pending, f.h.Stream)
	n.mu.Unlock()
	if ok {
		ch <- f // buffered: never blocks
	}
}

func (n *nativeConn) fail(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.err != nil {
		return
	}
	n.err = err
	close(n.done)
	_ = n.c.Close()
}

func (n *nativeConn) failure() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}

// roundTrip sends one frame on a fresh stream and waits for its answer.
func (n *nativeConn) roundTrip(ctx context.Context, t wire.Type, parts ...[]byte) (frame, error) {
	id := n.next.Add(1)
	ch := make(chan frame, 1)
	n.mu.Lock()
	if n.err != nil {
		n.mu.Unlock()
		return frame{}, n.err
	}
	n.pending[id] = ch
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
		n.mu.Unlock()
		if t == wire.Execute {
			_ = n.write(wire.Cancel, 0, id)
		}
		return frame{}, ctx.Err()
	}
}

func (n *nativeConn) Execute(ctx context.Context, req *pb.ExecuteRequest) (*pb.ExecuteReply, error) {
	parts, size := wire.ExecuteBody(req.GetRequestId(), req.GetTool(), req.GetDeadlineUnixNano(), req.GetArgsJson(), req.GetBinaryArgs())
	if size > n.maxBody {
		return nil, fmt.Errorf("%w: the request is %d bytes", ErrMessageTooLarge, size)
	}
	f, err := n.roundTrip(ctx, wire.Execute, parts...)
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
	f, err := n.roundTrip(ctx, wire.Request, body)
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
