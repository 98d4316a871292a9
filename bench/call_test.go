// Package bench holds Go benchmarks of a call through snakepit.Runtime, over
// the native and the gRPC transport, of the same call as raw gRPC to a worker
// the runtime does not manage, and of the floor: a bare payload echoed by the
// minimal Python server of bench/floor over a Unix socket or pipes. The
// fuller comparison, with rounds, medians, start-up and memory and a report,
// is the program bench/callbench (`make bench`); see docs/benchmarks.md.
//
//	go test -run '^$' -bench . ./bench
//
// Each benchmark has two sub-benchmarks: c1, one caller issuing calls back to
// back, and c16, 16 concurrent callers (b.RunParallel). Every path uses one
// Python process; workers have the "process" profile (capacity 1). Besides
// ns/op they report the p50 and p99 latency of the calls in the final b.N
// run. They skip when no Python 3.11+ is found; the gRPC ones also skip when
// no Python with grpcio and protobuf is found. Every path runs the same
// interpreter: the first with grpcio and protobuf when there is one.
package bench

import (
	"context"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/bench/floor"
	"github.com/snakepit-go/snakepit/bench/harness"
	"github.com/snakepit-go/snakepit/telemetry"
)

var (
	envOnce sync.Once
	env     *harness.Env
	envErr  error
)

// TestMain stops the workers once every benchmark has run. They are started
// by the first benchmark that needs them, so `go test` without -bench starts
// nothing.
func TestMain(m *testing.M) {
	code := m.Run()
	if env != nil {
		env.Close()
	}
	os.Exit(code)
}

func setup(b *testing.B) *harness.Env {
	b.Helper()
	envOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		env, envErr = harness.Start(ctx, harness.Options{PoolSizes: []int{1}, Transports: []string{"native", "grpc"},
			RawWorkers: 1, FloorServers: 1, GRPCOptional: true})
	})
	if harness.IsNoPython(envErr) {
		b.Skipf("skipping: no Python 3.11+ interpreter (set $SNAKEPIT_PYTHON or install one): %v", envErr)
	}
	if envErr != nil {
		b.Fatal(envErr)
	}
	return env
}

// path makes the call a benchmark measures; grpc marks the paths that need
// grpcio and protobuf.
type path struct {
	grpc bool
	call func(*harness.Env, harness.Payload) harness.Call
}

var (
	nativePath = path{call: func(e *harness.Env, p harness.Payload) harness.Call {
		return e.RuntimeCall(harness.PoolName("native", 1), p)
	}}
	grpcPath = path{grpc: true, call: func(e *harness.Env, p harness.Payload) harness.Call {
		return e.RuntimeCall(harness.PoolName("grpc", 1), p)
	}}
	rawPath = path{grpc: true, call: func(e *harness.Env, p harness.Payload) harness.Call {
		return e.RawCall(1, p)
	}}
	floorSocketPath = path{call: func(e *harness.Env, p harness.Payload) harness.Call {
		return e.FloorCall(floor.Socket, 1, p)
	}}
	floorPipePath = path{call: func(e *harness.Env, p harness.Payload) harness.Call {
		return e.FloorCall(floor.Pipe, 1, p)
	}}
)

func BenchmarkRuntimeCallNative100B(b *testing.B) { benchCall(b, nativePath, harness.Payload100B) }
func BenchmarkRuntimeCallNative1MiB(b *testing.B) { benchCall(b, nativePath, harness.Payload1MiB) }
func BenchmarkRuntimeCallGRPC100B(b *testing.B)   { benchCall(b, grpcPath, harness.Payload100B) }

// BenchmarkRuntimeCallNative100BSubscribed is BenchmarkRuntimeCallNative100B
// with a subscriber to the runtime's events (every call then publishes
// request.executed and pool.capacity_reached): the cost of the event stream
// on the call path, compared with the unsubscribed benchmark in one run.
func BenchmarkRuntimeCallNative100BSubscribed(b *testing.B) {
	e := setup(b)
	var seen atomic.Int64
	sub := e.Runtime.Subscribe(func(telemetry.Event) { seen.Add(1) })
	defer func() {
		sub.Close()
		if seen.Load() == 0 {
			b.Fatal("the subscriber saw no event")
		}
		b.ReportMetric(float64(sub.Dropped()), "dropped-events")
	}()
	benchCall(b, nativePath, harness.Payload100B)
}
func BenchmarkRuntimeCallGRPC1MiB(b *testing.B) { benchCall(b, grpcPath, harness.Payload1MiB) }
func BenchmarkRawGRPC100B(b *testing.B)         { benchCall(b, rawPath, harness.Payload100B) }
func BenchmarkRawGRPC1MiB(b *testing.B)         { benchCall(b, rawPath, harness.Payload1MiB) }
func BenchmarkFloorSocket100B(b *testing.B)     { benchCall(b, floorSocketPath, harness.Payload100B) }
func BenchmarkFloorSocket1MiB(b *testing.B)     { benchCall(b, floorSocketPath, harness.Payload1MiB) }
func BenchmarkFloorPipe100B(b *testing.B)       { benchCall(b, floorPipePath, harness.Payload100B) }
func BenchmarkFloorPipe1MiB(b *testing.B)       { benchCall(b, floorPipePath, harness.Payload1MiB) }

func benchCall(b *testing.B, path path, p harness.Payload) {
	e := setup(b)
	if path.grpc && !e.HasGRPC {
		b.Skip("skipping: no Python interpreter with grpcio and protobuf (set $SNAKEPIT_PYTHON or install them)")
	}
	call := path.call(e, p)
	ctx := context.Background()
	// Warm the connection and the worker up outside the timed runs.
	if _, err := harness.Measure(ctx, call, 1, 200*time.Millisecond); err != nil {
		b.Fatal(err)
	}
	b.Run("c1", func(b *testing.B) {
		b.SetBytes(int64(p.Size))
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			t0 := time.Now()
			if err := call(ctx, 0); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		b.StopTimer()
		reportLatency(b, lat)
	})
	b.Run("c16", func(b *testing.B) {
		const callers = 16
		procs := runtime.GOMAXPROCS(0)
		b.SetBytes(int64(p.Size))
		// RunParallel starts parallelism × GOMAXPROCS goroutines.
		b.SetParallelism((callers + procs - 1) / procs)
		var (
			next   atomic.Int64
			mu     sync.Mutex
			all    []time.Duration
			failed atomic.Pointer[error]
		)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			g := int(next.Add(1) - 1)
			var mine []time.Duration
			for pb.Next() {
				t0 := time.Now()
				if err := call(ctx, g); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
		b.StopTimer()
		if err := failed.Load(); err != nil {
			b.Fatal(*err)
		}
		reportLatency(b, all)
	})
}

func reportLatency(b *testing.B, lat []time.Duration) {
	r := harness.Run{Latencies: lat}
	slices.Sort(r.Latencies)
	b.ReportMetric(float64(r.Quantile(0.50).Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(r.Quantile(0.99).Nanoseconds()), "p99-ns")
}
