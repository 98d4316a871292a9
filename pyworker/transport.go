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
}

// Transport is how the runtime talks to a worker process. gRPC is the first
// implementation; a faster framed transport can be added behind the same seam.
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
