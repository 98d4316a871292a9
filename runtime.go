package snakepit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/snakepit-go/snakepit/actors"
	apb "github.com/snakepit-go/snakepit/actors/pb"
	"github.com/snakepit-go/snakepit/profiles"
	"github.com/snakepit-go/snakepit/pyworker"
	wpb "github.com/snakepit-go/snakepit/pyworker/pb"
	"github.com/snakepit-go/snakepit/telemetry"
)

// Runtime owns the pools of Python workers started from one Config.
type Runtime struct {
	cfg     Config
	log     hclog.Logger
	system  *actor.ActorSystem
	pools   map[string]*actor.PID
	names   []string
	procs   *pyworker.ProcessSet
	runDir  string
	pkgDir  string
	runID   string
	token   string
	events  *telemetry.Bus
	onEvent *telemetry.Subscription // Config.OnEvent's
	started time.Time
	metrics metricsState
	admin   *adminServer
	// callbacks are the Go functions Python may call (Runtime.Register).
	callbacks callbackRegistry

	seq      atomic.Uint64
	stopping atomic.Bool
	stopOnce sync.Once
	stopErr  error
}

// Start validates cfg, starts every pool and returns once every worker has
// answered its first health check. If any worker cannot boot, Start stops
// what it started and returns an error carrying the Python traceback
// (errors.Is(err, ErrBootFailed)).
func Start(ctx context.Context, cfg Config) (*Runtime, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	rt := &Runtime{cfg: cfg, log: cfg.Logger, pools: map[string]*actor.PID{}, procs: pyworker.NewProcessSet(),
		events: telemetry.NewBus()}
	if err := rt.prepare(); err != nil {
		return nil, err
	}
	if cfg.OnEvent != nil { // closed by shutdown, which every later failure runs
		rt.onEvent = rt.events.Subscribe(cfg.OnEvent)
	}
	if cfg.AdminAddr != "" {
		rt.ensureMetrics() // count from the start
	}
	pyworker.Sweep(cfg.RuntimeDir, rt.log.Named("sweep")) // orphans of dead hosts; logs what it swept
	rt.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return telemetry.SlogToHclog(rt.log.Named("actor"))
	}))
	actors.ReapOrphanLaunches(rt.system)
	for _, p := range cfg.Pools {
		if err := rt.startPool(ctx, p); err != nil {
			rt.abort()
			return nil, err
		}
	}
	if err := rt.awaitReady(ctx); err != nil {
		rt.abort()
		return nil, err
	}
	if cfg.AdminAddr != "" {
		if err := rt.startAdmin(); err != nil {
			rt.abort()
			return nil, err
		}
	}
	rt.started = time.Now()
	rt.log.Info("runtime started", "pools", strings.Join(rt.names, ","), "run_id", rt.runID)
	return rt, nil
}

// prepare makes the private run directory, the token and the run id.
func (rt *Runtime) prepare() error {
	dir, err := os.MkdirTemp(rt.cfg.RuntimeDir, "snakepit-")
	if err != nil {
		return fmt.Errorf("snakepit: make the runtime directory (Config.RuntimeDir): %w", err)
	}
	rt.runDir = dir
	if err := pyworker.WriteOwner(dir); err != nil { // for the sweep of a later start, should this host die
		rt.log.Warn("cannot record this host in the run directory; a later start will not remove it", "error", err)
	}
	rt.runID, rt.token = randomHex(8), randomHex(32)
	if rt.pkgDir, err = pyworker.InstallPackage(dir); err != nil {
		_ = os.RemoveAll(dir)
		return fmt.Errorf("snakepit: install the worker package in %s: %w", dir, err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (rt *Runtime) startPool(ctx context.Context, p PoolConfig) error {
	transport, _ := pyworker.LookupTransport(p.Transport) // validated
	interp, err := pyworker.FindInterpreter(ctx, p.Python, transport.RequiredModules())
	if err != nil {
		return fmt.Errorf("snakepit: pool %q: %w", p.Name, err)
	}
	profile, _ := profiles.Lookup(p.Profile) // validated
	in := profiles.Interpreter{Version: interp.Version, FreeThreaded: interp.FreeThreaded, GILEnabled: interp.GILEnabled}
	if p.Profile == profiles.AutoName && in.FreeThreaded && !in.GILEnabled {
		rt.checkAdapterGIL(ctx, p, interp, &in)
	}
	shape := profile.Shape(profiles.Settings{ThreadsPerWorker: p.ThreadsPerWorker, Interpreter: in})
	log := rt.log.Named(p.Name)
	log.Debug("pool shape", "profile", shape.Profile, "capacity", shape.Capacity, "why", shape.Why, "python", interp.Path)
	settings := actors.PoolSettings{
		Name: p.Name, Profile: shape.Profile, Size: p.Size, QueueSize: p.QueueSize, Restart: p.Restart, Logger: log,
		Recycle: p.Recycle, Sessions: p.Sessions, Events: rt.events, AutoFallback: p.Profile == profiles.AutoName,
		Worker: actors.WorkerSettings{
			Spec: pyworker.Spec{
				Adapter: p.Adapter, Interpreter: interp, Transport: transport, RunDir: rt.runDir,
				PackageDir: rt.pkgDir, PythonPath: p.PythonPath, Env: envList(p.Env, unsetInHost(shape.Env)), Dir: p.Dir,
				RunID: rt.runID, Token: rt.token, Capacity: shape.Capacity, Profile: shape.Profile,
				ThreadChecks:    p.ThreadSafetyChecks,
				MaxMessageBytes: rt.cfg.MaxMessageBytes, Processes: rt.procs,
				Callbacks: rt.callbacks.serve(p.Name, rt.cfg.MaxMessageBytes),
			},
			StartTimeout: p.StartTimeout, ShutdownGrace: rt.cfg.ShutdownGrace, KillAfter: rt.cfg.KillAfter,
			Watchdog: p.Watchdog,
		},
	}
	pid, err := rt.system.Root.SpawnNamed(actors.NewPoolProps(settings), "pool-"+p.Name)
	if err != nil {
		return fmt.Errorf("snakepit: spawn pool %q: %w", p.Name, err)
	}
	rt.pools[p.Name] = pid
	rt.names = append(rt.names, p.Name)
	return nil
}

// checkAdapterGIL imports the adapter once, for the auto profile on a
// free-threaded interpreter: an extension that switches the GIL on makes
// auto pick processes. If the import fails, the workers' boot reports why.
func (rt *Runtime) checkAdapterGIL(ctx context.Context, p PoolConfig, interp pyworker.Interpreter, in *profiles.Interpreter) {
	spec := pyworker.Spec{Adapter: p.Adapter, Interpreter: interp, PackageDir: rt.pkgDir, PythonPath: p.PythonPath,
		Env: envList(p.Env, nil), Dir: p.Dir}
	cctx, cancel := context.WithTimeout(ctx, p.StartTimeout)
	defer cancel()
	on, by, err := spec.AdapterGIL(cctx)
	switch {
	case err != nil:
		rt.log.Debug("could not check whether the adapter switches the GIL on", "pool", p.Name, "error", err)
	case on:
		in.GILEnabled, in.GILEnabledBy = true, by
		if by == "" {
			in.GILEnabledBy = "(unnamed)"
		}
		rt.log.Warn("importing the adapter switches the free-threaded interpreter's GIL on; profile auto picks process",
			"pool", p.Name, "module", by, "fix", "the module must declare free-threading support (Py_mod_gil)")
	}
}

// unsetInHost keeps the KEY=VALUE pairs whose key the host's environment
// does not set: a profile's defaults never override the operator's choice.
func unsetInHost(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if _, set := os.LookupEnv(k); !set {
			out = append(out, kv)
		}
	}
	return out
}

// envList returns extra, then m's pairs sorted by key (later pairs win).
func envList(m map[string]string, extra []string) []string {
	out := append([]string(nil), extra...)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+m[k])
	}
	return out
}

// awaitReady waits until every pool reports all its workers ready.
func (rt *Runtime) awaitReady(ctx context.Context) error {
	var errs []error
	for _, name := range rt.names {
		r, err := askFor[*actors.ReadyReply](ctx, rt, rt.pools[name], &actors.AwaitReady{})
		if err != nil {
			return fmt.Errorf("snakepit: waiting for pool %q to start: %w", name, err)
		}
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("snakepit: start: %w", errors.Join(errs...))
	}
	return nil
}

// ask sends msg to pid and waits for the first reply or ctx.
func (rt *Runtime) ask(ctx context.Context, pid *actor.PID, msg any) (any, error) {
	box := actors.NewReplyBox(rt.system)
	defer box.Release()
	rt.system.Root.RequestWithCustomSender(pid, msg, box.PID())
	select {
	case r := <-box.C():
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// askFor is ask for a request answered with a T: any other reply is a
// *replyError.
func askFor[T any](ctx context.Context, rt *Runtime, pid *actor.PID, msg any) (T, error) {
	r, err := rt.ask(ctx, pid, msg)
	if err != nil {
		var zero T
		return zero, err
	}
	t, ok := r.(T)
	if !ok {
		return t, &replyError{request: msg, reply: r}
	}
	return t, nil
}

// replyError: an actor answered a request with a reply of the wrong type,
// which is a bug of the runtime. It matches ErrTransport, as an unexpected
// reply to a call does (roundTrip).
type replyError struct{ request, reply any }

func (e *replyError) Error() string {
	return fmt.Sprintf("unexpected reply %T to %T (a bug of the runtime: please report it)", e.reply, e.request)
}

func (e *replyError) Unwrap() error { return ErrTransport }

// abort tears down a Start that failed half-way.
func (rt *Runtime) abort() {
	ctx, cancel := context.WithTimeout(context.Background(), rt.cfg.ShutdownGrace+rt.cfg.KillAfter+time.Second)
	defer cancel()
	rt.stopping.Store(true)
	_ = rt.shutdown(ctx)
}

// Call runs tool in one of pool's workers with args (nil, a map with string
// keys or a struct; []byte values of a map[string]any travel as raw bytes)
// and returns its result. It ends within ctx's deadline, or
// Config.CallTimeout when ctx has none, with a result or an error matching
// one of: *PythonError, ErrUnknownPool, ErrUnknownTool, ErrBadArguments,
// ErrUnencodableResult, ErrPoolSaturated, ErrWorkerCrashed
// (*WorkerCrashedError), ErrPoolUnavailable, ErrTransport, ErrStopped, or
// the context's error.
//
// Options: Idempotent(n) lets the call be retried, up to n more times, when
// the worker running it dies under it.
func (rt *Runtime) Call(ctx context.Context, pool, tool string, args any, opts ...CallOption) (*Result, error) {
	return rt.call(ctx, pool, tool, args, callOptions(opts))
}

func (rt *Runtime) call(ctx context.Context, pool, tool string, args any, o callOpts) (*Result, error) {
	pid, req, err := rt.newRequest(ctx, pool, tool, args, o)
	if err != nil {
		return nil, err
	}
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rt.cfg.CallTimeout)
		defer cancel()
	}
	deadline, _ := ctx.Deadline()
	req.Execute.DeadlineUnixNano = wireDeadline(deadline)
	for attempt := 0; ; attempt++ {
		res, err := rt.roundTrip(ctx, pid, pool, req, o.session.strictID())
		if o.session != nil {
			o.session.observe(res, err)
		}
		if attempt >= o.retries || !retryable(err) || ctx.Err() != nil {
			return res, err
		}
		rt.log.Info("retrying an idempotent call whose worker died", "pool", pool, "tool", tool, "attempt", attempt+2, "error", err)
		req = proto.Clone(req).(*apb.CallRequest) // the pool may still hold the last one
		req.Execute.RequestId = rt.requestID()
	}
}

// newRequest checks a call's pool, context, tool name and arguments and
// builds its request (without a deadline).
func (rt *Runtime) newRequest(ctx context.Context, pool, tool string, args any, o callOpts) (*actor.PID, *apb.CallRequest, error) {
	pid, err := rt.pool(pool)
	if err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("snakepit: %s.%s: %w", pool, tool, err)
	}
	if err := checkToolName(pool, tool); err != nil {
		return nil, nil, err
	}
	argsJSON, binary, err := encodeArgs(args)
	if err != nil {
		return nil, nil, callError(pool, tool, ErrBadArguments, err.Error())
	}
	req := &apb.CallRequest{Execute: &wpb.ExecuteRequest{
		RequestId: rt.requestID(), Tool: tool, ArgsJson: argsJSON, BinaryArgs: binary,
	}, OriginWorker: actors.OriginWorker(ctx)}
	if o.session != nil {
		req.SessionId, req.Execute.SessionId = o.session.id, o.session.id
	}
	if size := proto.Size(req); size > rt.cfg.MaxMessageBytes {
		return nil, nil, callError(pool, tool, ErrMessageTooLarge, fmt.Sprintf(
			"the request is %d bytes, more than Config.MaxMessageBytes (%d)", size, rt.cfg.MaxMessageBytes))
	}
	return pid, req, nil
}

func (rt *Runtime) requestID() string { return rt.runID + "-" + strconv.FormatUint(rt.seq.Add(1), 36) }

// roundTrip sends req to the pool and waits for its reply or ctx. session
// is the strict session the call belongs to ("" for none): its worker's
// death loses it.
func (rt *Runtime) roundTrip(ctx context.Context, pid *actor.PID, pool string, req *apb.CallRequest, session string) (*Result, error) {
	box := actors.NewReplyBox(rt.system)
	defer box.Release()
	rt.system.Root.RequestWithCustomSender(pid, req, box.PID())
	tool := req.GetExecute().GetTool()
	select {
	case r := <-box.C():
		reply, ok := r.(*apb.CallReply)
		if !ok {
			return nil, callError(pool, tool, ErrTransport, fmt.Sprintf("unexpected reply %T", r))
		}
		return decodeReply(pool, tool, session, reply)
	case <-ctx.Done():
		rt.system.Root.Send(pid, &apb.CancelCall{RequestId: req.GetExecute().GetRequestId()})
		return nil, fmt.Errorf("snakepit: %s.%s: %w", pool, tool, ctx.Err())
	}
}

// RunID is the random id of this runtime; every worker process carries it
// in its command line (--run-id), so its processes can be found in /proc.
func (rt *Runtime) RunID() string { return rt.runID }
