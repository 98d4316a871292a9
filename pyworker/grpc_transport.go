package pyworker

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/snakepit-go/snakepit/pyworker/pb"
	"github.com/snakepit-go/snakepit/pyworker/wire"
)

// TokenMetadataKey is the gRPC metadata entry that carries the runtime token.
const TokenMetadataKey = "x-snakepit-token"

// GRPC is the gRPC transport: grpc.aio in Python, over a Unix socket.
type GRPC struct{}

func (GRPC) Name() string              { return "grpc" }
func (GRPC) RequiredModules() []string { return GRPCModules }

// Dial creates the client and opens the Callbacks stream, which lives as
// long as the connection: the worker sends the callbacks its tools make on
// it. A worker that does not serve Callbacks still serves every other call.
func (GRPC) Dial(ctx context.Context, ep Endpoint) (Conn, error) {
	token := metadata.Pairs(TokenMetadataKey, ep.Token)
	withToken := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(metadata.NewOutgoingContext(ctx, token), method, req, reply, cc, opts...)
	}
	streamWithToken := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(metadata.NewOutgoingContext(ctx, token), desc, cc, method, opts...)
	}
	cc, err := grpc.NewClient("unix://"+ep.Socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(withToken),
		grpc.WithStreamInterceptor(streamWithToken),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(ep.MaxMessageBytes),
			grpc.MaxCallSendMsgSize(ep.MaxMessageBytes)),
	)
	if err != nil {
		return nil, err
	}
	c := &grpcConn{cc: cc, client: pb.NewWorkerClient(cc), callbacks: ep.Callbacks, maxMsg: ep.MaxMessageBytes,
		parents: parents{}, callbacksDone: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	opened := make(chan error, 1)
	go c.serveCallbacks(opened, ep.MaxMessageBytes+wire.MetaAllowance)
	select {
	case err = <-opened:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("open the callbacks stream: %w", err)
	}
	return c, nil
}

type grpcConn struct {
	cc            *grpc.ClientConn
	client        pb.WorkerClient
	callbacks     CallbackFunc
	maxMsg        int
	ctx           context.Context // ends when the connection is closed
	cancel        context.CancelFunc
	callbacksDone chan struct{} // closed when the Callbacks reader ended
	closeOnce     sync.Once
	closeErr      error
	keys          atomic.Uint64

	mu      sync.Mutex
	parents parents
}

// grpcError maps the status codes the runtime tells apart.
func grpcError(err error) error {
	switch status.Code(err) {
	case codes.ResourceExhausted:
		return fmt.Errorf("%w: %s", ErrMessageTooLarge, status.Convert(err).Message())
	case codes.DeadlineExceeded:
		// gRPC's own timer may fire a moment before ctx reports it.
		return fmt.Errorf("%w: %s", context.DeadlineExceeded, status.Convert(err).Message())
	}
	return err
}

// addParent registers an in-flight call for its callbacks (when there is a
// handler and the call has a request id); remove it with the key returned.
func (c *grpcConn) addParent(ctx context.Context, id string) uint64 {
	if c.callbacks == nil || id == "" {
		return 0
	}
	key := c.keys.Add(1)
	c.mu.Lock()
	c.parents.add(id, ctx, key)
	c.mu.Unlock()
	return key
}

func (c *grpcConn) removeParent(id string, key uint64) {
	if key == 0 {
		return
	}
	c.mu.Lock()
	c.parents.remove(id, key)
	c.mu.Unlock()
}

func (c *grpcConn) Execute(ctx context.Context, req *pb.ExecuteRequest) (*pb.ExecuteReply, error) {
	if key := c.addParent(ctx, req.GetRequestId()); key != 0 {
		defer c.removeParent(req.GetRequestId(), key)
	}
	reply, err := c.client.Execute(ctx, req)
	if err != nil {
		return nil, grpcError(err)
	}
	return reply, nil
}

// serveCallbacks opens the Callbacks stream, reports the outcome on opened,
// then answers every CallbackRequest from a goroutine of its own, until the
// stream ends: when the connection is closed, or at once when the worker
// does not serve Callbacks (an older worker; its tools cannot call back).
func (c *grpcConn) serveCallbacks(opened chan<- error, maxRecv int) {
	defer close(c.callbacksDone)
	stream, err := c.client.Callbacks(c.ctx, grpc.MaxCallRecvMsgSize(maxRecv))
	opened <- err
	if err != nil {
		return
	}
	var sendMu sync.Mutex // one Send at a time
	for {
		req, err := stream.Recv()
		if err != nil {
			return
		}
		c.mu.Lock()
		parent := c.parents.context(req.GetParentRequestId())
		c.mu.Unlock()
		go func() {
			reply := sendableReply(runCallback(parent, c.ctx, c.callbacks, req))
			if size := proto.Size(reply); size > c.maxMsg {
				reply = tooLargeReply(req, size, c.maxMsg)
			}
			sendMu.Lock()
			defer sendMu.Unlock()
			_ = stream.Send(reply) // fails only once the stream has ended
		}()
	}
}

// sendableReply makes a callback's error text valid UTF-8, as protobuf
// strings must be (a handler's error may quote any bytes): an invalid byte
// becomes U+FFFD, as the native transport's JSON writes it. Otherwise Send
// fails, and with it the Callbacks stream of every later callback.
func sendableReply(reply *pb.CallbackReply) *pb.CallbackReply {
	if e := reply.GetError(); e != nil {
		e.Kind, e.Message = strings.ToValidUTF8(e.Kind, "\uFFFD"), strings.ToValidUTF8(e.Message, "\uFFFD")
	}
	return reply
}

// grpcStream is a streaming call over the ExecuteStream RPC. Its reader
// goroutine buffers the chunks (within the credit) and records the final
// message; the RPC's context is the call context's values without its
// cancellation, so that a cancel can still be acknowledged.
type grpcStream struct {
	*chunkStream
	rpc       pb.Worker_ExecuteStreamClient
	cancelRPC context.CancelFunc
	sendMu    sync.Mutex // one Send at a time
	ctxEnded  atomic.Bool
}

// cancelAckWait bounds the wait for the worker's acknowledgement of the
// cancel sent when a stream's context ended; then the RPC is cancelled.
const cancelAckWait = 2 * time.Second

func (s *grpcStream) send(m *pb.StreamControl) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	_ = s.rpc.Send(m) // a broken RPC shows in Recv
}

func (s *grpcStream) sendCredit(n uint32) {
	s.send(&pb.StreamControl{Msg: &pb.StreamControl_Credit{Credit: n}})
}

func (s *grpcStream) sendCancel() {
	s.send(&pb.StreamControl{Msg: &pb.StreamControl_Cancel{Cancel: true}})
}

// ctxEnd runs when the call's context ends before the stream did: cancel,
// then wait a moment for the acknowledgement before ending the RPC.
func (s *grpcStream) ctxEnd() {
	s.ctxEnded.Store(true)
	s.Cancel()
	t := time.NewTimer(cancelAckWait)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		s.cancelRPC()
	}
}

func (c *grpcConn) ExecuteStream(ctx context.Context, req *pb.ExecuteRequest, window int) (Stream, error) {
	if err := checkWindow(window); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rpcCtx, cancelRPC := context.WithCancel(context.WithoutCancel(ctx))
	rpc, err := c.client.ExecuteStream(rpcCtx)
	if err != nil {
		cancelRPC()
		return nil, grpcError(err)
	}
	s := &grpcStream{rpc: rpc, cancelRPC: cancelRPC}
	s.chunkStream = newChunkStream(window, s)
	key := c.addParent(ctx, req.GetRequestId())
	start := &pb.StreamControl{Msg: &pb.StreamControl_Start{Start: &pb.StreamStart{Execute: req, Window: uint32(window)}}}
	if err := rpc.Send(start); err != nil {
		if err == io.EOF { // the RPC ended: its status says why
			if _, rerr := rpc.Recv(); rerr != nil && rerr != io.EOF {
				err = rerr
			}
		}
		cancelRPC()
		c.removeParent(req.GetRequestId(), key)
		return nil, grpcError(err)
	}
	go s.read(ctx, func() { c.removeParent(req.GetRequestId(), key) })
	s.watch(ctx, s.ctxEnd)
	return s, nil
}

// read receives the stream's messages until its final one.
func (s *grpcStream) read(ctx context.Context, ended func()) {
	defer ended()
	defer s.cancelRPC()
	for {
		m, err := s.rpc.Recv()
		if err != nil {
			switch {
			case status.Code(err) == codes.Canceled && s.ctxEnded.Load() && ctx.Err() != nil:
				err = fmt.Errorf("the worker did not acknowledge the cancel within %v: %w", cancelAckWait, ctx.Err())
			case err == io.EOF:
				err = fmt.Errorf("worker ended the stream without a final message")
			default:
				err = grpcError(err)
			}
			s.finish(err)
			return
		}
		switch msg := m.GetMsg().(type) {
		case *pb.StreamMessage_ChunkJson:
			err = s.push(Chunk{Data: msg.ChunkJson})
		case *pb.StreamMessage_ChunkRaw:
			err = s.push(Chunk{Data: msg.ChunkRaw, Raw: true})
		case *pb.StreamMessage_Error:
			s.finish(&RemoteError{Info: msg.Error})
			return
		case *pb.StreamMessage_End:
			s.finish(io.EOF)
			return
		default:
			err = fmt.Errorf("an empty StreamMessage")
		}
		if err != nil {
			s.finish(fmt.Errorf("worker sent %w (window %d)", err, cap(s.ch)))
			return
		}
	}
}

func (c *grpcConn) EndSession(ctx context.Context, id string) (*pb.EndSessionReply, error) {
	reply, err := c.client.EndSession(ctx, &pb.EndSessionRequest{SessionId: id})
	if err != nil {
		return nil, grpcError(err)
	}
	return reply, nil
}

func (c *grpcConn) Describe(ctx context.Context) (*pb.DescribeReply, error) {
	return c.client.Describe(ctx, &pb.DescribeRequest{})
}

func (c *grpcConn) Health(ctx context.Context) (*pb.HealthReply, error) {
	return c.client.Health(ctx, &pb.HealthRequest{})
}

func (c *grpcConn) Stats(ctx context.Context) (*pb.StatsReply, error) {
	return c.client.Stats(ctx, &pb.StatsRequest{})
}

func (c *grpcConn) Shutdown(ctx context.Context, grace time.Duration) error {
	_, err := c.client.Shutdown(ctx, &pb.ShutdownRequest{GraceMs: grace.Milliseconds()})
	return err
}

// Close ends every RPC, the Callbacks stream included, and waits for the
// Callbacks reader to end. Callback handlers still running see their
// context cancelled.
func (c *grpcConn) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		c.closeErr = c.cc.Close()
		<-c.callbacksDone
	})
	return c.closeErr
}
