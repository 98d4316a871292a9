// Package harness is the setup shared by the call benchmarks (the
// bench/callbench program and the Go benchmarks in bench): it starts a
// snakepit.Runtime serving the echo test adapter over the native and the gRPC
// transport and, beside it, "raw" Python workers launched exactly as the
// runtime launches its own, reached by a plain gRPC client that involves no
// actor, and the floor servers of bench/floor. It measures a stream of calls
// and summarises the latencies, and measures a worker's start-up time and
// memory (startup.go).
package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/bench/floor"
	"github.com/snakepit-go/snakepit/profiles"
	"github.com/snakepit-go/snakepit/pyworker"
	"github.com/snakepit-go/snakepit/pyworker/pb"
)

// Adapter is the Python test adapter every worker serves.
const Adapter = "echo_tools"

// CallTimeout is the deadline given to every call on both paths; it is the
// runtime's default (Config.CallTimeout), which Runtime.Call applies to a
// context without a deadline.
const CallTimeout = snakepit.DefaultCallTimeout

// Payload is what one benchmarked call sends and expects back.
type Payload struct {
	Name string // "100B", "1MiB"
	Tool string // echo_tools tool
	Size int    // bytes sent (and returned)

	args     map[string]any    // Runtime.Call arguments
	argsJSON []byte            // the same arguments as the runtime encodes them ...
	binary   map[string][]byte // ... for the raw request
	want     []byte            // the exact reply payload
	raw      bool              // the reply is result_raw (else result_json)
	body     []byte            // what a floor call sends and gets back: the bare payload
}

// Payload100B echoes a 100-byte ASCII string through echo(value), as JSON
// both ways. Payload1MiB echoes 1 MiB through echo_bytes(data), as raw bytes
// both ways (ExecuteRequest.binary_args, ExecuteReply.result_raw).
var (
	Payload100B = jsonPayload("100B", strings.Repeat("0123456789", 10))
	Payload1MiB = bytesPayload("1MiB", 1<<20)
)

// Payloads are all payloads, by Name.
var Payloads = map[string]Payload{Payload100B.Name: Payload100B, Payload1MiB.Name: Payload1MiB}

func jsonPayload(name, s string) Payload {
	argsJSON, _ := json.Marshal(map[string]any{"value": s})
	want, _ := json.Marshal(s)
	return Payload{Name: name, Tool: "echo", Size: len(s), args: map[string]any{"value": s},
		argsJSON: argsJSON, want: want, body: []byte(s)}
}

func bytesPayload(name string, n int) Payload {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7 + i>>8)
	}
	return Payload{Name: name, Tool: "echo_bytes", Size: n, args: map[string]any{"data": data},
		argsJSON: []byte("{}"), binary: map[string][]byte{"data": data}, want: data, raw: true, body: data}
}

// Options configure Start.
type Options struct {
	// PoolSizes and Transports: one runtime pool per size and transport
	// ("native", "grpc"), named PoolName(transport, size).
	PoolSizes  []int
	Transports []string
	// RawWorkers is how many raw gRPC workers to start.
	RawWorkers int
	// FloorServers is how many floor servers (bench/floor) to start per
	// floor mode (socket and pipe).
	FloorServers int
	// FloorPipeSize, when not 0, is the pipe buffer size of the pipe floor
	// servers (bytes; Linux's default is 64 KiB).
	FloorPipeSize int
	// Python is the interpreter of every worker and floor server. Default:
	// the first interpreter with grpcio and protobuf (pyworker.FindInterpreter)
	// when anything speaks gRPC, else the first Python 3.11+.
	Python string
	// GRPCOptional: when no interpreter has grpcio and protobuf, start
	// without the gRPC pools and the raw workers (Env.HasGRPC is then false)
	// instead of failing.
	GRPCOptional bool
	// AdapterDir holds echo_tools.py. Default: testdata/pyadapters of this
	// module's source tree.
	AdapterDir string
	// Logger gets the runtime's and the workers' logs. Default: warnings and
	// errors to stderr.
	Logger hclog.Logger
}

// Env is a started runtime, raw workers and floor servers. Close it.
type Env struct {
	Runtime     *snakepit.Runtime
	Raw         []*RawWorker
	Floor       map[floor.Mode][]*floor.Server
	Interpreter pyworker.Interpreter
	HasGRPC     bool   // the gRPC pools and raw workers asked for were started
	GRPCVersion string // grpcio.__version__ of the workers' interpreter ("" without gRPC)
	PBVersion   string // google.protobuf.__version__

	pools    []string
	capacity int // of one raw worker
	dir      string
	procs    *pyworker.ProcessSet
	seq      atomic.Uint64
}

// RawWorker is a Python worker process started by pyworker.Launch, and a gRPC
// client of its own dialled to its socket.
type RawWorker struct {
	Socket string
	handle *pyworker.Handle
	cc     *grpc.ClientConn
	client pb.WorkerClient
	md     metadata.MD
}

// PoolName is the runtime pool of the given transport and size.
func PoolName(transport string, size int) string { return transport + strconv.Itoa(size) }

// ErrNoPython is matched (errors.Is) by Start's error when no suitable
// interpreter exists; benchmarks skip on it.
var ErrNoPython = pyworker.ErrNoPython

// FloorModes are the floor server variants, in report order.
var FloorModes = []floor.Mode{floor.Socket, floor.Pipe}

// Start starts the runtime, the raw workers and the floor servers and checks
// that one call of every payload round-trips intact on every path.
func Start(ctx context.Context, o Options) (*Env, error) {
	if o.AdapterDir == "" {
		o.AdapterDir = DefaultAdapterDir()
	}
	if _, err := os.Stat(filepath.Join(o.AdapterDir, Adapter+".py")); err != nil {
		return nil, fmt.Errorf("harness: the echo adapter: %w", err)
	}
	if o.Logger == nil {
		o.Logger = hclog.New(&hclog.LoggerOptions{Name: "bench", Level: hclog.Warn, Output: os.Stderr})
	}
	wantGRPC := o.RawWorkers > 0 || slices.Contains(o.Transports, "grpc")
	var modules []string
	if wantGRPC {
		modules = pyworker.GRPC{}.RequiredModules()
	}
	interp, err := pyworker.FindInterpreter(ctx, o.Python, modules)
	if err != nil && wantGRPC && o.GRPCOptional && errors.Is(err, ErrNoPython) {
		wantGRPC, o.RawWorkers = false, 0
		o.Transports = slices.DeleteFunc(slices.Clone(o.Transports), func(t string) bool { return t == "grpc" })
		interp, err = pyworker.FindInterpreter(ctx, o.Python, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	e := &Env{Interpreter: interp, HasGRPC: wantGRPC, procs: pyworker.NewProcessSet(),
		Floor: map[floor.Mode][]*floor.Server{}}
	if wantGRPC {
		e.GRPCVersion, e.PBVersion = moduleVersions(ctx, interp.Path)
	}

	// Every pool runs the same interpreter as the raw workers and the floor.
	var pools []snakepit.PoolConfig
	for _, t := range o.Transports {
		for _, size := range o.PoolSizes {
			name := PoolName(t, size)
			pools = append(pools, snakepit.PoolConfig{Name: name, Adapter: Adapter, Size: size,
				Transport: t, PythonPath: []string{o.AdapterDir}})
			e.pools = append(e.pools, name)
		}
	}
	if len(pools) > 0 {
		cfg := snakepit.Config{Pools: pools, Python: interp.Path, Logger: o.Logger}
		if e.Runtime, err = snakepit.Start(ctx, cfg); err != nil {
			return nil, fmt.Errorf("harness: start the runtime: %w", err)
		}
	}
	if err := e.startRaw(ctx, o); err != nil {
		e.Close()
		return nil, err
	}
	for _, m := range FloorModes {
		for i := 0; i < o.FloorServers; i++ {
			s, err := floor.Start(ctx, interp.Path, m, o.FloorPipeSize)
			if err != nil {
				e.Close()
				return nil, fmt.Errorf("harness: %w", err)
			}
			e.Floor[m] = append(e.Floor[m], s)
		}
	}
	if err := e.verify(ctx); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// workerSpec is the Spec the runtime builds for a worker of a pool of the
// default ("process") profile.
func workerSpec(id string, interp pyworker.Interpreter, t pyworker.Transport, runDir, pkgDir, adapterDir,
	runID, token string, log hclog.Logger) (pyworker.Spec, error) {
	profile, err := profiles.Lookup("")
	if err != nil {
		return pyworker.Spec{}, err
	}
	shape := profile.Shape(profiles.Settings{})
	return pyworker.Spec{
		ID: id, Adapter: Adapter, Interpreter: interp, Transport: t,
		RunDir: runDir, PackageDir: pkgDir, PythonPath: []string{adapterDir}, Env: shape.Env,
		RunID: runID, Token: token, Capacity: shape.Capacity,
		MaxMessageBytes: snakepit.DefaultMaxMessageBytes, Logger: log,
	}, nil
}

// startRaw launches the raw workers with the Spec the runtime would build for
// a pool of the default ("process") profile.
func (e *Env) startRaw(ctx context.Context, o Options) error {
	if o.RawWorkers == 0 {
		return nil
	}
	var err error
	if e.dir, err = os.MkdirTemp("", "snakepit-bench-"); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	pkgDir, err := pyworker.InstallPackage(e.dir)
	if err != nil {
		return fmt.Errorf("harness: install the worker package: %w", err)
	}
	runID, token := randomHex(8), randomHex(32)
	for i := 0; i < o.RawWorkers; i++ {
		// One run directory per worker, so its socket is the only one in it.
		runDir := filepath.Join(e.dir, "raw"+strconv.Itoa(i))
		if err := os.Mkdir(runDir, 0o700); err != nil {
			return fmt.Errorf("harness: %w", err)
		}
		id := "raw-" + strconv.Itoa(i)
		spec, err := workerSpec(id, e.Interpreter, pyworker.GRPC{}, runDir, pkgDir, o.AdapterDir, runID, token, o.Logger.Named(id))
		if err != nil {
			return fmt.Errorf("harness: %w", err)
		}
		spec.Processes = e.procs
		e.capacity = spec.Capacity
		lctx, cancel := context.WithTimeout(ctx, snakepit.DefaultStartTimeout)
		h, err := pyworker.Launch(lctx, spec)
		cancel()
		if err != nil {
			return fmt.Errorf("harness: launch raw worker %d: %w", i, err)
		}
		w := &RawWorker{handle: h, md: metadata.Pairs(pyworker.TokenMetadataKey, token)}
		e.Raw = append(e.Raw, w)
		socks, _ := filepath.Glob(filepath.Join(runDir, "*.sock"))
		if len(socks) != 1 {
			return fmt.Errorf("harness: raw worker %d: expected one socket in %s, found %d", i, runDir, len(socks))
		}
		w.Socket = socks[0]
		w.cc, err = grpc.NewClient("unix://"+w.Socket,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(
				grpc.MaxCallRecvMsgSize(snakepit.DefaultMaxMessageBytes),
				grpc.MaxCallSendMsgSize(snakepit.DefaultMaxMessageBytes)))
		if err != nil {
			return fmt.Errorf("harness: dial raw worker %d: %w", i, err)
		}
		w.client = pb.NewWorkerClient(w.cc)
	}
	return nil
}

// verify makes one call per payload on every pool, raw worker and floor
// server and checks the reply byte for byte.
func (e *Env) verify(ctx context.Context) error {
	for _, p := range []Payload{Payload100B, Payload1MiB} {
		for _, h := range e.pools {
			res, err := e.Runtime.Call(ctx, h, p.Tool, p.args)
			if err != nil {
				return fmt.Errorf("harness: verify %s on pool %s: %w", p.Name, h, err)
			}
			got := res.JSON()
			if p.raw {
				got, _ = res.Bytes()
			}
			if !bytes.Equal(got, p.want) {
				return fmt.Errorf("harness: verify %s on pool %s: the echo differs", p.Name, h)
			}
		}
		for i, w := range e.Raw {
			reply, err := e.rawExecute(ctx, w, p)
			if err != nil {
				return fmt.Errorf("harness: verify %s on raw worker %d: %w", p.Name, i, err)
			}
			got := reply.GetResultJson()
			if p.raw {
				got = reply.GetResultRaw()
			}
			if !bytes.Equal(got, p.want) {
				return fmt.Errorf("harness: verify %s on raw worker %d: the echo differs", p.Name, i)
			}
		}
		for _, m := range FloorModes {
			for i, s := range e.Floor[m] {
				got, err := s.Echo(ctx, p.body)
				if err != nil {
					return fmt.Errorf("harness: verify %s on %s floor %d: %w", p.Name, m, i, err)
				}
				if !bytes.Equal(got, p.body) {
					return fmt.Errorf("harness: verify %s on %s floor %d: the echo differs", p.Name, m, i)
				}
			}
		}
	}
	return nil
}

// Close stops the runtime, the raw workers and the floor servers and removes
// their files.
func (e *Env) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if e.Runtime != nil {
		_ = e.Runtime.Stop(ctx)
	}
	for _, servers := range e.Floor {
		for _, s := range servers {
			s.Close()
		}
	}
	for _, w := range e.Raw {
		if w.cc != nil {
			_ = w.cc.Close()
		}
		w.handle.Stop(2*time.Second, time.Second)
	}
	_ = e.procs.Wait(ctx)
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}

// Call performs one call as concurrent caller g (0 ≤ g < concurrency).
type Call func(ctx context.Context, g int) error

// RuntimeCall calls p's tool with Runtime.Call on the named pool.
func (e *Env) RuntimeCall(pool string, p Payload) Call {
	return func(ctx context.Context, _ int) error {
		res, err := e.Runtime.Call(ctx, pool, p.Tool, p.args)
		if err != nil {
			return err
		}
		n := len(res.JSON())
		if p.raw {
			b, _ := res.Bytes()
			n = len(b)
		}
		return checkLen(n, p)
	}
}

// RawCall calls p's tool through the first n raw workers; caller g always
// uses worker g mod n.
func (e *Env) RawCall(n int, p Payload) Call {
	workers := e.Raw[:n]
	return func(ctx context.Context, g int) error {
		reply, err := e.rawExecute(ctx, workers[g%n], p)
		if err != nil {
			return err
		}
		return checkLen(rawLen(reply, p), p)
	}
}

// RawCappedCall calls p's tool through the first n raw workers, with at most
// a worker's capacity of calls in flight on each, as the runtime's pool
// allows: a caller takes any free worker from a free list (waiting, in
// arrival order, while none is free) and puts it back after the call. It is
// the pool's admission control with no actor in between.
func (e *Env) RawCappedCall(n int, p Payload) Call {
	free := make(chan *RawWorker, n*e.capacity)
	for i := 0; i < e.capacity; i++ {
		for _, w := range e.Raw[:n] {
			free <- w
		}
	}
	return func(ctx context.Context, _ int) error {
		var w *RawWorker
		select {
		case w = <-free:
		case <-ctx.Done():
			return ctx.Err()
		}
		reply, err := e.rawExecute(ctx, w, p)
		free <- w
		if err != nil {
			return err
		}
		return checkLen(rawLen(reply, p), p)
	}
}

// FloorCall echoes p's bare payload (p.Size bytes, no call metadata) through
// the first n floor servers of mode m; caller g always uses server g mod n,
// and nothing limits the calls in flight, as with RawCall.
func (e *Env) FloorCall(m floor.Mode, n int, p Payload) Call {
	servers := e.Floor[m][:n]
	return func(ctx context.Context, g int) error {
		got, err := servers[g%n].Echo(ctx, p.body)
		if err != nil {
			return err
		}
		if len(got) != len(p.body) {
			return fmt.Errorf("%s: floor reply of %d bytes, want %d", p.Name, len(got), len(p.body))
		}
		return nil
	}
}

// FloorCappedCall is FloorCall with at most one frame in flight per server,
// admitted from a free list as RawCappedCall admits calls: the floor of a
// pool whose workers run one call at a time.
func (e *Env) FloorCappedCall(m floor.Mode, n int, p Payload) Call {
	free := make(chan *floor.Server, n)
	for _, s := range e.Floor[m][:n] {
		free <- s
	}
	return func(ctx context.Context, _ int) error {
		var s *floor.Server
		select {
		case s = <-free:
		case <-ctx.Done():
			return ctx.Err()
		}
		got, err := s.Echo(ctx, p.body)
		free <- s
		if err != nil {
			return err
		}
		if len(got) != len(p.body) {
			return fmt.Errorf("%s: floor reply of %d bytes, want %d", p.Name, len(got), len(p.body))
		}
		return nil
	}
}

// rawExecute sends the ExecuteRequest that Runtime.Call would build for p
// (a unique request id, the same arguments, a CallTimeout deadline both as a
// gRPC deadline and in deadline_unix_nano) straight to the worker.
func (e *Env) rawExecute(ctx context.Context, w *RawWorker, p Payload) (*pb.ExecuteReply, error) {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	req := &pb.ExecuteRequest{
		RequestId: "raw-" + strconv.FormatUint(e.seq.Add(1), 36), Tool: p.Tool,
		ArgsJson: p.argsJSON, BinaryArgs: p.binary, DeadlineUnixNano: deadline.UnixNano(),
	}
	reply, err := w.client.Execute(metadata.NewOutgoingContext(ctx, w.md), req)
	if err != nil {
		return nil, err
	}
	if e := reply.GetError(); e != nil {
		return nil, fmt.Errorf("%s: %s: %s", e.GetKind(), e.GetType(), e.GetMessage())
	}
	return reply, nil
}

func rawLen(reply *pb.ExecuteReply, p Payload) int {
	if p.raw {
		return len(reply.GetResultRaw())
	}
	return len(reply.GetResultJson())
}

func checkLen(n int, p Payload) error {
	if n != len(p.want) {
		return fmt.Errorf("%s: reply of %d bytes, want %d", p.Name, n, len(p.want))
	}
	return nil
}

// DefaultAdapterDir is testdata/pyadapters of the source tree this package
// was built from.
func DefaultAdapterDir() string {
	_, file, _, ok := goruntime.Caller(0)
	if !ok {
		return filepath.Join("testdata", "pyadapters")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "pyadapters")
}

func moduleVersions(ctx context.Context, python string) (grpcVersion, pbVersion string) {
	out, err := exec.CommandContext(ctx, python, "-c",
		"import grpc, google.protobuf as p; print(grpc.__version__, p.__version__)").Output()
	if f := strings.Fields(string(out)); err == nil && len(f) == 2 {
		return f[0], f[1]
	}
	return "?", "?"
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// IsNoPython reports whether err means no usable Python was found.
func IsNoPython(err error) bool { return errors.Is(err, ErrNoPython) }
