package pyworker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/snakepit-go/snakepit/pyworker/pb"
	"github.com/snakepit-go/snakepit/pyworker/wire"
)

// These tests start a real Python worker (the echo_tools test adapter) and
// talk to its socket directly, as a stranger who does not hold the token
// would: nothing may run on its behalf.

const authToken = "the-right-token"

// syncBuffer collects a worker's logs; they are printed when a test fails.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// launchWorker starts one worker on tr and returns it with its socket path;
// opts adjust its Spec.
func launchWorker(t *testing.T, tr Transport, opts ...func(*Spec)) (*Handle, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	interp, err := FindInterpreter(ctx, "", tr.RequiredModules())
	if err != nil {
		t.Fatal(err)
	}
	runDir, err := os.MkdirTemp("", "sp-auth-") // short: a socket path has a length limit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(runDir) })
	pkg, err := InstallPackage(runDir)
	if err != nil {
		t.Fatal(err)
	}
	adapters, _ := filepath.Abs("../testdata/pyadapters")
	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker logs:\n%s", logs.String())
		}
	})
	spec := Spec{ID: "auth-1", Adapter: "echo_tools", Interpreter: interp, Transport: tr,
		RunDir: runDir, PackageDir: pkg, PythonPath: []string{adapters}, RunID: "authtest", Token: authToken,
		Capacity: 1, MaxMessageBytes: 1 << 20, Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: logs})}
	for _, o := range opts {
		o(&spec)
	}
	h, err := Launch(ctx, spec)
	if err != nil {
		t.Fatalf("Launch: %v\nlogs:\n%s", err, logs.String())
	}
	t.Cleanup(h.Kill)
	socks, _ := filepath.Glob(filepath.Join(runDir, "*.sock"))
	if len(socks) != 1 {
		t.Fatalf("sockets in the run directory: %v", socks)
	}
	return h, socks[0]
}

// refusedConnection sends frames on a fresh connection and returns what the
// worker answered until it closed the connection.
func refusedConnection(t *testing.T, sock string, frames ...[]byte) []wire.Header {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(bytes.Join(frames, nil)); err != nil {
		t.Fatal(err)
	}
	var got []wire.Header
	for {
		h, body, err := wire.ReadFrame(c, make([]byte, wire.HeaderSize), 1<<20)
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return got // closed by the worker (a reset: it closed with our frames unread)
		}
		if err != nil {
			t.Fatalf("after %v: %v (want the worker to close the connection)", got, err)
		}
		if h.Type == wire.ProtocolError && !strings.Contains(string(body), "HELLO") && !strings.Contains(string(body), "token") {
			t.Errorf("PROTOCOL_ERROR does not say why: %s", body)
		}
		got = append(got, h)
	}
}

func frameBytes(t wire.Type, stream uint64, body []byte) []byte {
	hdr := make([]byte, wire.HeaderSize)
	wire.NewHeader(t, 0, stream, len(body)).Put(hdr)
	return append(hdr, body...)
}

func executeFrame(stream uint64, tool string) []byte {
	parts, _ := wire.ExecuteBody("r1", tool, 0, []byte(`{"value":1}`), nil)
	return frameBytes(wire.Execute, stream, bytes.Join(parts, nil))
}

func helloFrame(token any) []byte {
	body := map[string]any{"version": wire.Version}
	if token != nil {
		body["token"] = token
	}
	b, _ := json.Marshal(body)
	return frameBytes(wire.Hello, 0, b)
}

var shutdownRequest = frameBytes(wire.Request, 1, []byte(`{"op":"shutdown","grace_ms":0}`))

// assertOnlyProtocolError: the worker's whole answer was one PROTOCOL_ERROR.
func assertOnlyProtocolError(t *testing.T, got []wire.Header) {
	t.Helper()
	if len(got) != 1 || got[0].Type != wire.ProtocolError {
		t.Fatalf("the worker answered %v; want one PROTOCOL_ERROR, then the connection closed", got)
	}
}

// assertNothingRan: the worker is up, was not shut down, and ran no call.
func assertNothingRan(t *testing.T, h *Handle) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := h.Conn.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats on the runtime's own connection: %v", err)
	}
	if st.GetRequestsServed() != 0 {
		t.Fatalf("the worker served %d requests for connections without the token", st.GetRequestsServed())
	}
	hl, err := h.Conn.Health(ctx)
	if err != nil || !hl.GetOk() {
		t.Fatalf("Health after the refused connections: %v %v (a refused shutdown must not stop it)", hl, err)
	}
}

// TestNativeRequestWithoutHelloIsRefused: the first frame must be HELLO; a
// REQUEST or EXECUTE before it is answered with PROTOCOL_ERROR only, the
// connection is closed, and the request is not executed.
func TestNativeRequestWithoutHelloIsRefused(t *testing.T) {
	h, sock := launchWorker(t, Native{})
	cases := map[string][][]byte{
		"shutdown request":      {shutdownRequest},
		"health request":        {frameBytes(wire.Request, 1, []byte(`{"op":"health"}`))},
		"execute":               {executeFrame(1, "echo")},
		"execute, then a HELLO": {executeFrame(1, "echo"), helloFrame(authToken)},
	}
	for name, frames := range cases {
		t.Run(name, func(t *testing.T) {
			assertOnlyProtocolError(t, refusedConnection(t, sock, frames...))
		})
	}
	assertNothingRan(t, h)
}

// TestNativeWrongTokenIsRefused: a HELLO with a wrong or missing token gets
// PROTOCOL_ERROR and a closed connection; requests sent right behind it (not
// waiting for HELLO_OK) are never executed.
func TestNativeWrongTokenIsRefused(t *testing.T) {
	h, sock := launchWorker(t, Native{})
	cases := map[string]any{"wrong": "not-the-token", "empty": "", "missing": nil,
		"prefix": authToken[:5], "longer": authToken + "x", "not a string": 42}
	for name, token := range cases {
		t.Run(name, func(t *testing.T) {
			got := refusedConnection(t, sock, helloFrame(token), shutdownRequest, executeFrame(2, "echo"))
			assertOnlyProtocolError(t, got)
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Native{}.Dial(ctx, Endpoint{Socket: sock, Token: "not-the-token", MaxMessageBytes: 1 << 20})
	if err == nil || !strings.Contains(err.Error(), "wrong token") {
		t.Fatalf("Dial with a wrong token: %v; want the worker's refusal", err)
	}
	assertNothingRan(t, h)
	conn, err := Native{}.Dial(ctx, Endpoint{Socket: sock, Token: authToken, MaxMessageBytes: 1 << 20})
	if err != nil {
		t.Fatalf("Dial with the right token: %v", err)
	}
	defer conn.Close()
	if r, err := conn.Execute(ctx, &pb.ExecuteRequest{Tool: "echo", ArgsJson: []byte(`{"value":7}`)}); err != nil || string(r.GetResultJson()) != "7" {
		t.Fatalf("echo with the right token: %v %v", r, err)
	}
}

// TestGRPCEveryCallNeedsTheToken: over gRPC the token travels as metadata on
// every call; a call without it, or with a wrong one, is UNAUTHENTICATED and
// does not run.
func TestGRPCEveryCallNeedsTheToken(t *testing.T) {
	h, sock := launchWorker(t, GRPC{})
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := pb.NewWorkerClient(cc)
	calls := map[string]func(ctx context.Context) error{
		"Execute": func(ctx context.Context) error {
			_, err := client.Execute(ctx, &pb.ExecuteRequest{Tool: "echo", ArgsJson: []byte(`{"value":1}`)})
			return err
		},
		"Health":   func(ctx context.Context) error { _, err := client.Health(ctx, &pb.HealthRequest{}); return err },
		"Stats":    func(ctx context.Context) error { _, err := client.Stats(ctx, &pb.StatsRequest{}); return err },
		"Describe": func(ctx context.Context) error { _, err := client.Describe(ctx, &pb.DescribeRequest{}); return err },
		"Shutdown": func(ctx context.Context) error { _, err := client.Shutdown(ctx, &pb.ShutdownRequest{}); return err },
	}
	tokens := map[string]metadata.MD{
		"no token":      nil,
		"wrong token":   metadata.Pairs(TokenMetadataKey, "not-the-token"),
		"empty token":   metadata.Pairs(TokenMetadataKey, ""),
		"other key":     metadata.Pairs("authorization", authToken),
		"token, prefix": metadata.Pairs(TokenMetadataKey, authToken[:5]),
	}
	for tname, md := range tokens {
		for cname, call := range calls {
			t.Run(tname+"/"+cname, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if md != nil {
					ctx = metadata.NewOutgoingContext(ctx, md)
				}
				if err := call(ctx); status.Code(err) != codes.Unauthenticated {
					t.Fatalf("got %v, want UNAUTHENTICATED", err)
				}
			})
		}
	}
	assertNothingRan(t, h)
	ctx := metadata.NewOutgoingContext(context.Background(), metadata.Pairs(TokenMetadataKey, authToken))
	if _, err := client.Health(ctx, &pb.HealthRequest{}); err != nil {
		t.Fatalf("Health with the right token: %v", err)
	}
}
