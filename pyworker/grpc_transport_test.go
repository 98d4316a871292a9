package pyworker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/snakepit-go/snakepit/pyworker/pb"
)

// fakeGRPCWorker is a Go server speaking worker.proto, to test the gRPC
// transport's side of streams and callbacks without Python; the Python
// worker's side is tested in pyworker/python/tests. Every RPC must carry
// the token, streams included.
type fakeGRPCWorker struct {
	pb.UnimplementedWorkerServer
	execute   func(ctx context.Context, req *pb.ExecuteRequest) (*pb.ExecuteReply, error)
	stream    func(s pb.Worker_ExecuteStreamServer) error
	callbacks func(s pb.Worker_CallbacksServer) error // nil: Unimplemented, as an older worker
	endSess   func(ctx context.Context, req *pb.EndSessionRequest) (*pb.EndSessionReply, error)
}

func (f *fakeGRPCWorker) Execute(ctx context.Context, req *pb.ExecuteRequest) (*pb.ExecuteReply, error) {
	return f.execute(ctx, req)
}

func (f *fakeGRPCWorker) ExecuteStream(s pb.Worker_ExecuteStreamServer) error { return f.stream(s) }

func (f *fakeGRPCWorker) Callbacks(s pb.Worker_CallbacksServer) error {
	if f.callbacks == nil {
		return f.UnimplementedWorkerServer.Callbacks(s)
	}
	return f.callbacks(s)
}

func (f *fakeGRPCWorker) EndSession(ctx context.Context, req *pb.EndSessionRequest) (*pb.EndSessionReply, error) {
	return f.endSess(ctx, req)
}

func checkToken(ctx context.Context) error {
	if md, _ := metadata.FromIncomingContext(ctx); len(md.Get(TokenMetadataKey)) != 1 || md.Get(TokenMetadataKey)[0] != "secret" {
		return status.Error(codes.Unauthenticated, "no token")
	}
	return nil
}

// serveGRPC serves f on a Unix socket until the test ends.
func serveGRPC(t *testing.T, f *fakeGRPCWorker) Endpoint {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "g.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := checkToken(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := checkToken(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}))
	pb.RegisterWorkerServer(srv, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return Endpoint{Socket: sock, Token: "secret", MaxMessageBytes: 1 << 20}
}

func dialGRPC(t *testing.T, ep Endpoint) *grpcConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := GRPC{}.Dial(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*grpcConn)
}

// streamControls reads a stream's control messages on a goroutine.
func streamControls(s pb.Worker_ExecuteStreamServer) <-chan *pb.StreamControl {
	out := make(chan *pb.StreamControl, 1024)
	go func() {
		defer close(out)
		for {
			m, err := s.Recv()
			if err != nil {
				return
			}
			out <- m
		}
	}()
	return out
}

func nextControl(in <-chan *pb.StreamControl, within time.Duration) *pb.StreamControl {
	select {
	case m := <-in:
		return m
	case <-time.After(within):
		return nil
	}
}

func chunkMsg(i int) *pb.StreamMessage {
	return &pb.StreamMessage{Msg: &pb.StreamMessage_ChunkJson{ChunkJson: fmt.Appendf(nil, "%d", i)}}
}

var endMsg = &pb.StreamMessage{Msg: &pb.StreamMessage_End{End: true}}

func cancelledMsg() *pb.StreamMessage {
	return &pb.StreamMessage{Msg: &pb.StreamMessage_Error{Error: &pb.ErrorInfo{Kind: pb.ErrorInfo_KIND_CANCELLED, Message: "cancelled"}}}
}

func TestGRPCStreamCredits(t *testing.T) {
	for _, window := range []int{1, 4} {
		t.Run(fmt.Sprint("window ", window), func(t *testing.T) {
			leakCheck(t)
			const chunks = 30
			ep := serveGRPC(t, &fakeGRPCWorker{stream: func(s pb.Worker_ExecuteStreamServer) error {
				first, err := s.Recv()
				if err != nil {
					return err
				}
				st := first.GetStart()
				if st.GetWindow() != uint32(window) || st.GetExecute().GetTool() != "count" || st.GetExecute().GetSessionId() != "s" {
					t.Errorf("start = %v", first)
				}
				controls := streamControls(s)
				credit := window
				for i := range chunks {
					for credit == 0 {
						m := nextControl(controls, 5*time.Second)
						if m.GetCredit() == 0 {
							t.Errorf("want a credit, got %v", m)
							return nil
						}
						if credit += int(m.GetCredit()); credit > window {
							t.Errorf("holds a credit of %d, over the window of %d", credit, window)
						}
					}
					if err := s.Send(chunkMsg(i)); err != nil {
						return err
					}
					credit--
				}
				return s.Send(endMsg)
			}})
			c := dialGRPC(t, ep)
			s, err := c.ExecuteStream(context.Background(), &pb.ExecuteRequest{Tool: "count", SessionId: "s"}, window)
			if err != nil {
				t.Fatal(err)
			}
			for i := range chunks {
				ch, err := s.Next(context.Background())
				if err != nil || string(ch.Data) != fmt.Sprint(i) || ch.Raw {
					t.Fatalf("chunk %d: %q %v", i, ch.Data, err)
				}
			}
			if _, err := s.Next(context.Background()); err != io.EOF {
				t.Fatalf("at the end: %v", err)
			}
			waitClosed(t, s.Done(), "Done")
			if s.Err() != nil {
				t.Fatal(s.Err())
			}
		})
	}
}

// TestGRPCStreamCancel: one cancel message however often Cancel is called;
// the RPC stays open for the acknowledgement, which ends the stream.
func TestGRPCStreamCancel(t *testing.T) {
	leakCheck(t)
	gotCancel, ack := make(chan int, 1), make(chan struct{})
	ep := serveGRPC(t, &fakeGRPCWorker{stream: func(s pb.Worker_ExecuteStreamServer) error {
		if _, err := s.Recv(); err != nil {
			return err
		}
		controls := streamControls(s)
		_ = s.Send(&pb.StreamMessage{Msg: &pb.StreamMessage_ChunkRaw{ChunkRaw: []byte{1}}})
		cancels := 0
		for m := nextControl(controls, 5*time.Second); m != nil; m = nextControl(controls, 100*time.Millisecond) {
			if m.GetCancel() {
				cancels++
			}
		}
		gotCancel <- cancels
		<-ack
		return s.Send(cancelledMsg())
	}})
	c := dialGRPC(t, ep)
	s, err := c.ExecuteStream(context.Background(), &pb.ExecuteRequest{Tool: "count"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if ch, err := s.Next(context.Background()); err != nil || !ch.Raw || string(ch.Data) != "\x01" {
		t.Fatalf("chunk %v %v", ch, err)
	}
	s.Cancel()
	s.Cancel()
	if n := <-gotCancel; n != 1 {
		t.Fatalf("the worker got %d cancels", n)
	}
	select {
	case <-s.Done():
		t.Fatal("Done before the ack")
	default:
	}
	close(ack)
	var re *RemoteError
	if _, err := s.Next(context.Background()); !errors.As(err, &re) || re.Info.GetKind() != pb.ErrorInfo_KIND_CANCELLED {
		t.Fatalf("got %v, want the ack", err)
	}
	if !errors.As(s.Err(), &re) {
		t.Fatalf("Err = %v", s.Err())
	}
}

// TestGRPCStreamContextEnd: the stream's context ending sends a cancel; the
// ack ends the stream, and without an ack the RPC is cancelled shortly after.
func TestGRPCStreamContextEnd(t *testing.T) {
	for _, acks := range []bool{true, false} {
		t.Run(fmt.Sprint("ack ", acks), func(t *testing.T) {
			leakCheck(t)
			ep := serveGRPC(t, &fakeGRPCWorker{stream: func(s pb.Worker_ExecuteStreamServer) error {
				if _, err := s.Recv(); err != nil {
					return err
				}
				m, err := s.Recv()
				if err != nil || !m.GetCancel() {
					t.Errorf("got %v %v, want a cancel", m, err)
				}
				if acks {
					return s.Send(cancelledMsg())
				}
				<-s.Context().Done()
				return s.Context().Err()
			}})
			c := dialGRPC(t, ep)
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			s, err := c.ExecuteStream(ctx, &pb.ExecuteRequest{Tool: "count"}, 2)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Next(context.Background())
			var re *RemoteError
			switch {
			case acks && (!errors.As(err, &re) || re.Info.GetKind() != pb.ErrorInfo_KIND_CANCELLED):
				t.Fatalf("got %v, want the ack", err)
			case !acks && (!errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not acknowledge")):
				t.Fatalf("got %v, want the stream given up", err)
			}
			waitClosed(t, s.Done(), "Done")
		})
	}
}

func TestGRPCChunkBeyondCredit(t *testing.T) {
	leakCheck(t)
	ep := serveGRPC(t, &fakeGRPCWorker{stream: func(s pb.Worker_ExecuteStreamServer) error {
		if _, err := s.Recv(); err != nil {
			return err
		}
		for i := range 3 {
			_ = s.Send(chunkMsg(i))
		}
		<-s.Context().Done()
		return nil
	}})
	c := dialGRPC(t, ep)
	s, err := c.ExecuteStream(context.Background(), &pb.ExecuteRequest{Tool: "count"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, s.Done(), "Done")
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "beyond the stream's credit") {
		t.Fatalf("Err = %v", err)
	}
}

func TestGRPCStreamTooLarge(t *testing.T) {
	leakCheck(t)
	ep := serveGRPC(t, &fakeGRPCWorker{stream: func(s pb.Worker_ExecuteStreamServer) error {
		_, err := s.Recv()
		return err
	}})
	c := dialGRPC(t, ep)
	_, err := c.ExecuteStream(context.Background(), &pb.ExecuteRequest{Tool: "count", ArgsJson: make([]byte, 2<<20)}, 2)
	if !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("got %v, want ErrMessageTooLarge", err)
	}
}

// callbackServer lets a fake worker's tools call back over the Callbacks
// stream, matching answers to ids.
type callbackServer struct {
	mu      sync.Mutex
	stream  pb.Worker_CallbacksServer
	waiting map[uint64]chan *pb.CallbackReply
	opened  chan struct{}
}

func newCallbackServer() *callbackServer {
	return &callbackServer{waiting: map[uint64]chan *pb.CallbackReply{}, opened: make(chan struct{})}
}

func (cs *callbackServer) serve(s pb.Worker_CallbacksServer) error {
	cs.mu.Lock()
	cs.stream = s
	cs.mu.Unlock()
	close(cs.opened)
	for {
		r, err := s.Recv()
		if err != nil {
			return nil
		}
		cs.mu.Lock()
		ch := cs.waiting[r.GetId()]
		delete(cs.waiting, r.GetId())
		cs.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

func (cs *callbackServer) call(req *pb.CallbackRequest) *pb.CallbackReply {
	<-cs.opened
	ch := make(chan *pb.CallbackReply, 1)
	cs.mu.Lock()
	cs.waiting[req.GetId()] = ch
	err := cs.stream.Send(req)
	cs.mu.Unlock()
	if err != nil {
		return nil
	}
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		return nil
	}
}

// TestGRPCCallbacks: callbacks arrive on the Callbacks stream the runtime
// opened (with the token), run concurrently with the parent's context, and
// are answered by id; a too-large answer becomes TOO_LARGE and the stream
// goes on.
func TestGRPCCallbacks(t *testing.T) {
	leakCheck(t)
	cs := newCallbackServer()
	ep := serveGRPC(t, &fakeGRPCWorker{callbacks: cs.serve, execute: func(ctx context.Context, req *pb.ExecuteRequest) (*pb.ExecuteReply, error) {
		var wg sync.WaitGroup
		replies := make([]*pb.CallbackReply, 101)
		for i := range 101 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := "square"
				if i == 100 {
					name = "huge"
				}
				replies[i] = cs.call(&pb.CallbackRequest{Id: uint64(900 + i), Name: name, ParentRequestId: req.GetRequestId(),
					ArgsJson: fmt.Appendf(nil, `{"i":%d}`, i), BinaryArgs: map[string][]byte{"b": {byte(i)}}})
			}()
		}
		wg.Wait()
		for i, r := range replies[:100] {
			if r.GetId() != uint64(900+i) || string(r.GetResultJson()) != fmt.Sprint(i*i) {
				return nil, fmt.Errorf("callback %d answered %v", i, r)
			}
		}
		if r := replies[100]; r.GetError().GetKind() != "TOO_LARGE" {
			return nil, fmt.Errorf("huge answered %v", r)
		}
		return &pb.ExecuteReply{Outcome: &pb.ExecuteReply_ResultJson{ResultJson: []byte(`"ok"`)}}, nil
	}})
	deadline := time.Now().Add(time.Minute)
	ep.Callbacks = func(ctx context.Context, parent string, req *pb.CallbackRequest) *pb.CallbackReply {
		if dl, ok := ctx.Deadline(); !ok || !dl.Equal(deadline) || parent != "req-g" || ctx.Err() != nil {
			return callbackFailure("TEST", fmt.Sprintf("deadline %v, parent %q, err %v", dl, parent, ctx.Err()))
		}
		if req.GetName() == "huge" {
			return &pb.CallbackReply{Outcome: &pb.CallbackReply_ResultRaw{ResultRaw: make([]byte, 2<<20)}}
		}
		var i int
		_, _ = fmt.Sscanf(string(req.GetArgsJson()), `{"i":%d}`, &i)
		if b := req.GetBinaryArgs()["b"]; len(b) != 1 || int(b[0]) != i%256 {
			return callbackFailure("TEST", "binary argument lost")
		}
		return jsonReply(fmt.Sprint(i * i))
	}
	c := dialGRPC(t, ep)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	r, err := c.Execute(ctx, &pb.ExecuteRequest{RequestId: "req-g", Tool: "callback"})
	if err != nil || string(r.GetResultJson()) != `"ok"` {
		t.Fatalf("Execute: %v %v", r, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.parents) != 0 {
		t.Fatalf("%d parents left", len(c.parents))
	}
}

// TestGRPCCallbackWithoutHandler: no handler: UNKNOWN_CALLBACK; a parent
// over: a cancelled context.
func TestGRPCCallbackWithoutHandler(t *testing.T) {
	leakCheck(t)
	cs := newCallbackServer()
	ep := serveGRPC(t, &fakeGRPCWorker{callbacks: cs.serve})
	dialGRPC(t, ep)
	if r := cs.call(&pb.CallbackRequest{Id: 1, Name: "f"}); r.GetError().GetKind() != "UNKNOWN_CALLBACK" {
		t.Fatalf("got %v", r)
	}
}

func TestGRPCCallbackParentOver(t *testing.T) {
	leakCheck(t)
	cs := newCallbackServer()
	ep := serveGRPC(t, &fakeGRPCWorker{callbacks: cs.serve})
	ep.Callbacks = func(ctx context.Context, parent string, req *pb.CallbackRequest) *pb.CallbackReply {
		return jsonReply(fmt.Sprintf("%q", context.Cause(ctx)))
	}
	dialGRPC(t, ep)
	if r := cs.call(&pb.CallbackRequest{Id: 1, Name: "f", ParentRequestId: "gone"}); !strings.Contains(string(r.GetResultJson()), "not in flight") {
		t.Fatalf("got %v", r)
	}
}

// TestGRPCWorkerWithoutCallbacks: a worker that does not serve Callbacks
// still serves plain calls; Close leaves no goroutine behind.
func TestGRPCWorkerWithoutCallbacks(t *testing.T) {
	leakCheck(t)
	ep := serveGRPC(t, &fakeGRPCWorker{
		execute: func(ctx context.Context, req *pb.ExecuteRequest) (*pb.ExecuteReply, error) {
			return &pb.ExecuteReply{Outcome: &pb.ExecuteReply_ResultJson{ResultJson: []byte(`1`)}}, nil
		},
		endSess: func(ctx context.Context, req *pb.EndSessionRequest) (*pb.EndSessionReply, error) {
			return &pb.EndSessionReply{Ended: req.GetSessionId() == "s1", HookError: "boom"}, nil
		},
	})
	ep.Callbacks = func(context.Context, string, *pb.CallbackRequest) *pb.CallbackReply { return nil }
	c := dialGRPC(t, ep)
	waitClosed(t, c.callbacksDone, "the Callbacks reader")
	if r, err := c.Execute(context.Background(), &pb.ExecuteRequest{RequestId: "r", Tool: "echo"}); err != nil || string(r.GetResultJson()) != "1" {
		t.Fatalf("Execute: %v %v", r, err)
	}
	if r, err := c.EndSession(context.Background(), "s1"); err != nil || !r.GetEnded() || r.GetHookError() != "boom" {
		t.Fatalf("EndSession: %v %v", r, err)
	}
}

// TestGRPCCloseEndsCallbacks: Close ends the Callbacks stream and its reader.
func TestGRPCCloseEndsCallbacks(t *testing.T) {
	leakCheck(t)
	cs := newCallbackServer()
	ended := make(chan struct{})
	ep := serveGRPC(t, &fakeGRPCWorker{callbacks: func(s pb.Worker_CallbacksServer) error {
		defer close(ended)
		return cs.serve(s)
	}})
	c := dialGRPC(t, ep)
	<-cs.opened
	_ = c.Close()
	waitClosed(t, c.callbacksDone, "the Callbacks reader")
	waitClosed(t, ended, "the worker's Callbacks RPC")
}
