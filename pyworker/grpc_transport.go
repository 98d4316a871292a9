package pyworker

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/snakepit-go/snakepit/pyworker/pb"
)

// TokenMetadataKey is the gRPC metadata entry that carries the runtime token.
const TokenMetadataKey = "x-snakepit-token"

// GRPC is the gRPC transport: grpc.aio in Python, over a Unix socket.
type GRPC struct{}

func (GRPC) Name() string              { return "grpc" }
func (GRPC) RequiredModules() []string { return GRPCModules }

func (GRPC) Dial(_ context.Context, ep Endpoint) (Conn, error) {
	token := metadata.Pairs(TokenMetadataKey, ep.Token)
	withToken := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(metadata.NewOutgoingContext(ctx, token), method, req, reply, cc, opts...)
	}
	cc, err := grpc.NewClient("unix://"+ep.Socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(withToken),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(ep.MaxMessageBytes),
			grpc.MaxCallSendMsgSize(ep.MaxMessageBytes)),
	)
	if err != nil {
		return nil, err
	}
	return &grpcConn{cc: cc, client: pb.NewWorkerClient(cc)}, nil
}

type grpcConn struct {
	cc     *grpc.ClientConn
	client pb.WorkerClient
}

func (c *grpcConn) Execute(ctx context.Context, req *pb.ExecuteRequest) (*pb.ExecuteReply, error) {
	reply, err := c.client.Execute(ctx, req)
	switch status.Code(err) {
	case codes.ResourceExhausted:
		return nil, fmt.Errorf("%w: %s", ErrMessageTooLarge, status.Convert(err).Message())
	case codes.DeadlineExceeded:
		// gRPC's own timer may fire a moment before ctx reports it.
		return nil, fmt.Errorf("%w: %s", context.DeadlineExceeded, status.Convert(err).Message())
	}
	return reply, err
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

func (c *grpcConn) Close() error { return c.cc.Close() }
