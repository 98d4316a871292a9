package pyworker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/snakepit-go/snakepit/pyworker/pb"
)

// Endpoint is where and how to reach one worker.
type Endpoint struct {
	// Socket is the Unix socket path the worker listens on.
	Socket string
	// Token is the per-runtime secret every call must carry.
	Token string
	// MaxMessageBytes bounds one message in either direction.
	MaxMessageBytes int
	// Callbacks serves the callbacks the worker's tools make (nil: every
	// callback is answered UNKNOWN_CALLBACK, exposing nothing).
	Callbacks CallbackFunc
}

// CallbackFunc serves one callback a tool made (snakepit.call / acall). The
// connection runs it on a goroutine of its own, never on its reader, with a
// context derived from the context of the call whose tool made it (parent,
// its request id): that call's deadline and cancellation reach the handler.
// A callback whose parent call is unknown or over gets a cancelled context.
// The reply's id is set by the connection.
type CallbackFunc func(ctx context.Context, parent string, req *pb.CallbackRequest) *pb.CallbackReply

// Chunk is one item a streaming tool yielded: JSON, or raw bytes.
type Chunk struct {
	Data []byte
	Raw  bool
}

// Stream is one streaming call in flight (Conn.ExecuteStream). Next and
// Cancel may be called from different goroutines; Next from one at a time.
type Stream interface {
	// Next returns the next chunk, blocking until it comes, and gives the
	// worker credit for one more. At the end it returns io.EOF (the tool
	// finished), a *RemoteError (the tool failed, or was cancelled: kind
	// CANCELLED acknowledges Cancel), or a transport error; ctx only bounds
	// this wait (the stream goes on).
	Next(ctx context.Context) (Chunk, error)
	// Cancel asks the worker to close the generator on the thread running
	// it; its answer (the acknowledgement) ends the stream. Idempotent.
	Cancel()
	// Done is closed once the worker has sent its final answer, or the
	// connection failed: from then on it runs nothing for this stream.
	Done() <-chan struct{}
	// Err is how the stream ended, once Done is closed: nil (the tool
	// finished), a *RemoteError (CANCELLED after Cancel), or the transport
	// error that ended the connection. Whether or not Next read it.
	Err() error
}

// RemoteError is a Python-side failure of a streaming call.
type RemoteError struct{ Info *pb.ErrorInfo }

func (e *RemoteError) Error() string {
	return fmt.Sprintf("%s: %s", e.Info.GetKind(), e.Info.GetMessage())
}

// Transport is how the runtime talks to a worker process. Two implement it:
// Native, the default (length-prefixed frames on a Unix socket;
// native_transport.go), and GRPC (the Worker service of worker.proto;
// grpc_transport.go). A pool picks one by name (PoolConfig.Transport,
// LookupTransport).
type Transport interface {
	// Name is the value of --transport passed to the Python worker.
	Name() string
	// RequiredModules are the Python modules the worker needs for it.
	RequiredModules() []string
	// Dial connects to a worker that has completed its handshake.
	Dial(ctx context.Context, ep Endpoint) (Conn, error)
}

// Conn is one connection to a worker. It is safe for concurrent use: many
// Execute calls may be in flight at once. Errors returned by its methods are
// transport failures; a failure inside Python arrives as ExecuteReply.Error.
type Conn interface {
	Execute(ctx context.Context, req *pb.ExecuteRequest) (*pb.ExecuteReply, error)
	// ExecuteStream starts a streaming call with window chunks of credit
	// (>= 1). It returns once the call was sent; the worker's answers come
	// through the Stream. ctx bounds the whole stream: when it ends before
	// the stream did, the worker is told to cancel (as Stream.Cancel).
	ExecuteStream(ctx context.Context, req *pb.ExecuteRequest, window int) (Stream, error)
	// EndSession runs the adapter's session-end hook for id and drops the
	// session's state in the worker.
	EndSession(ctx context.Context, id string) (*pb.EndSessionReply, error)
	Describe(ctx context.Context) (*pb.DescribeReply, error)
	Health(ctx context.Context) (*pb.HealthReply, error)
	Stats(ctx context.Context) (*pb.StatsReply, error)
	// Shutdown asks the worker to finish in-flight calls within grace and exit.
	Shutdown(ctx context.Context, grace time.Duration) error
	Close() error
}

// ErrMessageTooLarge is returned by Conn.Execute when the request or the
// reply exceeds Endpoint.MaxMessageBytes.
var ErrMessageTooLarge = errors.New("message exceeds the maximum size")

// DefaultTransport is the transport a pool uses when it names none.
const DefaultTransport = "native"

var transports = map[string]Transport{"native": Native{}, "grpc": GRPC{}}

// LookupTransport returns the named transport ("" means DefaultTransport).
func LookupTransport(name string) (Transport, error) {
	if name == "" {
		name = DefaultTransport
	}
	if t, ok := transports[name]; ok {
		return t, nil
	}
	return nil, fmt.Errorf("unknown transport %q (known: grpc, native)", name)
}
