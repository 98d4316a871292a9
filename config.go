package snakepit

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/snakepit-go/snakepit/actors"
	"github.com/snakepit-go/snakepit/profiles"
	"github.com/snakepit-go/snakepit/pyworker"
	"github.com/snakepit-go/snakepit/pyworker/wire"
	"github.com/snakepit-go/snakepit/supervision"
	"github.com/snakepit-go/snakepit/telemetry"
)

// Config configures a Runtime. The zero value of every field means its
// documented default; Start validates the whole Config once and reports
// every mistake with its field path.
type Config struct {
	// Pools to start. At least one is required.
	Pools []PoolConfig

	// Python is the interpreter every pool uses unless the pool sets its own.
	// Default: $SNAKEPIT_PYTHON, else the first of python3 (on PATH),
	// /usr/bin/python3 and python that can import the worker's packages.
	Python string

	// Logger receives the runtime's logs and every worker's output, under
	// named sub-loggers ("<pool>-<n>"). Default: hclog to stderr at Info.
	Logger hclog.Logger

	// CallTimeout bounds a call whose context has no deadline. Default 60s.
	CallTimeout time.Duration

	// ShutdownGrace is how long Stop lets in-flight calls finish and workers
	// exit after being asked to, before SIGTERM. Default 5s.
	ShutdownGrace time.Duration

	// KillAfter is how long a worker has after SIGTERM before SIGKILL.
	// Default 2s.
	KillAfter time.Duration

	// MaxMessageBytes bounds one request or reply on the wire. Default 64 MiB.
	MaxMessageBytes int

	// RuntimeDir is where the runtime makes its private (0700) directory for
	// worker sockets and the embedded Python package. Default: os.TempDir().
	RuntimeDir string

	// AdminAddr, when set, starts an HTTP endpoint serving /metrics
	// (Prometheus), /inspect (Runtime.Inspect as JSON; ?pool=NAME) and
	// /healthz (200, or 503 naming the failed pools). An address without a
	// host (":9464", ":0" for any free port) listens on 127.0.0.1 only; to be
	// reached from other machines, name the interface ("0.0.0.0:9464").
	// Runtime.AdminAddr gives the address bound. Default: none.
	AdminAddr string

	// OnEvent receives every event of the runtime from its very start (the
	// workers starting and becoming ready, a boot failure), one at a time on
	// a goroutine of its own, until Stop (or a failed Start) has delivered
	// the last one; Runtime.Subscribe only sees events after it is called.
	// See docs/telemetry.md. Default: none.
	OnEvent func(telemetry.Event)
}

// PoolConfig configures one pool of Python workers.
type PoolConfig struct {
	// Name identifies the pool in Call. Required; letters, digits, '.', '_'
	// and '-'; unique within the Config.
	Name string

	// Adapter is the Python module whose @tool functions the workers serve,
	// "pkg.module", or an adapter class instantiated once per worker,
	// "pkg.module:ClassName". Required.
	Adapter string

	// Size is the number of worker processes. Default: 1.
	Size int

	// Profile chooses how workers are made: "process" (one call at a time
	// per worker process), "thread" (each worker runs ThreadsPerWorker calls
	// at once on a thread pool; the adapter must declare itself thread-safe)
	// or "auto" (thread on a free-threaded Python whose GIL is off, process
	// otherwise). Both set OMP_NUM_THREADS and its kin to 1 unless Env or the
	// host's environment sets them. Default "process".
	Profile string

	// ThreadsPerWorker is the capacity of one worker in the thread profile
	// (and in auto when it picks thread): how many calls it runs at once.
	// Default 4.
	ThreadsPerWorker int

	// Transport is how the runtime talks to the workers: "native" (framed
	// messages over a Unix socket; the worker needs only Python's standard
	// library) or "grpc" (grpc.aio; the worker needs grpcio and protobuf).
	// Default "native".
	Transport string

	// ThreadSafetyChecks turns on the worker's thread-safety checker: a
	// warning when two threads enter code marked @snakepit.single_threaded at
	// once, and, in the thread profile, a warning for each imported library
	// known to need care when shared across threads (docs/thread-safety.md).
	// Default false.
	ThreadSafetyChecks bool

	// QueueSize bounds the calls waiting for a free worker; one more is
	// refused with ErrPoolSaturated. Default 1000.
	QueueSize int

	// Python overrides Config.Python for this pool. Default: Config.Python.
	Python string

	// PythonPath entries are put on the workers' sys.path, before
	// $PYTHONPATH. The working directory is on it too (as with python -m).
	// Default: none.
	PythonPath []string

	// Dir is the workers' working directory. Default: the host's.
	Dir string

	// Env adds variables to the workers' environment. Default: none.
	Env map[string]string

	// StartTimeout bounds one worker's start, from spawn to its first health
	// check, including the adapter's import. Default 60s.
	StartTimeout time.Duration

	// Restart is the supervision policy of the pool's workers: a worker whose
	// process dies is restarted after a backoff that doubles with each recent
	// restart; more than MaxRestarts restarts within Period fail the pool.
	// Default: 10 restarts within 60s, backoff 100ms doubling to 10s, ±20% jitter.
	Restart RestartPolicy

	// Recycle is when workers are replaced on purpose (not failures): by age,
	// calls served or memory. A replacement starts first; the old worker
	// finishes its calls, then stops. Default: off (see RecyclePolicy).
	Recycle RecyclePolicy

	// Watchdog finds stuck and frozen workers: a call that keeps running
	// HangGrace after its caller gave up, or a worker failing HealthFailures
	// health checks in a row, gets its worker killed and replaced. Default:
	// 5s grace; a check every 5s, 5s each, 3 failures (see WatchdogPolicy).
	Watchdog WatchdogPolicy

	// Sessions bounds the pool's sessions (Runtime.OpenSession): how many,
	// per worker, how long an idle one lives, and how long a recycled worker
	// keeps serving the sessions it holds. Default: 10000 sessions, no
	// per-worker limit, 30m idle TTL, 30s drain (see SessionPolicy).
	Sessions SessionPolicy
}

// RestartPolicy is the supervision policy of a pool's workers.
type RestartPolicy = supervision.Policy

// WatchdogPolicy is how a pool finds stuck and frozen workers; see the
// WatchdogPolicy table in the README.
type WatchdogPolicy = supervision.WatchdogPolicy

// SessionPolicy bounds a pool's sessions; see the SessionPolicy table in the
// README.
type SessionPolicy = actors.SessionPolicy

// RecyclePolicy is when a pool replaces its workers (TTL, request count,
// memory); see the RecyclePolicy table in the README.
type RecyclePolicy = supervision.RecyclePolicy

// Defaults.
const (
	DefaultCallTimeout     = 60 * time.Second
	DefaultShutdownGrace   = 5 * time.Second
	DefaultKillAfter       = 2 * time.Second
	DefaultMaxMessageBytes = 64 << 20
	DefaultPoolSize        = 1
	DefaultQueueSize       = 1000
	DefaultStartTimeout    = 60 * time.Second
)

// maxMessageBytesLimit bounds Config.MaxMessageBytes: gRPC takes message
// sizes as 32-bit ints, and the native transport adds its metadata
// allowance to the limit.
const maxMessageBytesLimit = math.MaxInt32 - wire.MetaAllowance

// ErrInvalidConfig is matched (errors.Is) by every *ConfigError.
var ErrInvalidConfig = errors.New("invalid config")

// FieldError is one invalid field.
type FieldError struct {
	Path    string // e.g. "pools[1].size"
	Problem string
}

func (f FieldError) String() string { return f.Path + ": " + f.Problem }

// ConfigError lists every invalid field of a Config.
type ConfigError struct{ Fields []FieldError }

func (e *ConfigError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.String()
	}
	return "snakepit: invalid config: " + strings.Join(parts, "; ")
}

func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

var (
	poolNameRe = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	adapterRe  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*)?$`)
	envKeyRe   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Validate reports every invalid field of c as a *ConfigError (nil if none).
func (c Config) Validate() error {
	v := &validator{}
	if len(c.Pools) == 0 {
		v.add("pools", "at least one pool is required")
	}
	v.nonNegative("call_timeout", c.CallTimeout)
	v.nonNegative("shutdown_grace", c.ShutdownGrace)
	v.nonNegative("kill_after", c.KillAfter)
	if c.AdminAddr != "" {
		if _, err := adminListenAddr(c.AdminAddr); err != nil {
			v.add("admin_addr", fmt.Sprintf("%q is not host:port (e.g. \":9464\", loopback only): %v", c.AdminAddr, err))
		}
	}
	if c.MaxMessageBytes < 0 {
		v.add("max_message_bytes", fmt.Sprintf("must be ≥ 0 (got %d); 0 means the default, 64 MiB", c.MaxMessageBytes))
	} else if c.MaxMessageBytes > maxMessageBytesLimit {
		v.add("max_message_bytes", fmt.Sprintf("must be at most %d (got %d): protobuf and gRPC messages stop short of 2 GiB, "+
			"and a native frame adds %d bytes of metadata; 0 means the default, 64 MiB", maxMessageBytesLimit, c.MaxMessageBytes, wire.MetaAllowance))
	}
	seen := map[string]int{}
	for i, p := range c.Pools {
		p.validate(v, fmt.Sprintf("pools[%d]", i), seen, i)
	}
	if len(v.fields) == 0 {
		return nil
	}
	return &ConfigError{Fields: v.fields}
}

func (p PoolConfig) validate(v *validator, at string, seen map[string]int, i int) {
	switch {
	case p.Name == "":
		v.add(at+".name", "is required")
	case !poolNameRe.MatchString(p.Name):
		v.add(at+".name", fmt.Sprintf("%q may hold only letters, digits, '.', '_' and '-'", p.Name))
	default:
		if j, dup := seen[p.Name]; dup {
			v.add(at+".name", fmt.Sprintf("%q is already the name of pools[%d]", p.Name, j))
		}
		seen[p.Name] = i
	}
	switch {
	case p.Adapter == "":
		v.add(at+".adapter", `is required: a Python module ("pkg.module") or class ("pkg.module:Class")`)
	case strings.HasSuffix(p.Adapter, ".py") || strings.ContainsAny(p.Adapter, "/\\"):
		v.add(at+".adapter", fmt.Sprintf(`%q looks like a file path: name the module instead (%q), with its directory in PythonPath`,
			p.Adapter, strings.TrimSuffix(filepathBase(p.Adapter), ".py")))
	case !adapterRe.MatchString(p.Adapter):
		v.add(at+".adapter", fmt.Sprintf(`%q is not a module path ("pkg.module") or class ("pkg.module:Class")`, p.Adapter))
	}
	if p.Size < 0 {
		v.add(at+".size", fmt.Sprintf("must be ≥ 1 (got %d); 0 means the default, %d", p.Size, DefaultPoolSize))
	}
	if p.QueueSize < 0 {
		v.add(at+".queue_size", fmt.Sprintf("must be ≥ 1 (got %d); 0 means the default, %d", p.QueueSize, DefaultQueueSize))
	}
	if _, err := pyworker.LookupTransport(p.Transport); err != nil {
		v.add(at+".transport", err.Error())
	}
	if _, err := profiles.Lookup(p.Profile); err != nil {
		v.add(at+".profile", err.Error())
	}
	if p.ThreadsPerWorker < 0 {
		v.add(at+".threads_per_worker", fmt.Sprintf("must be ≥ 1 (got %d); 0 means the default, %d", p.ThreadsPerWorker, profiles.DefaultThreadsPerWorker))
	}
	v.nonNegative(at+".start_timeout", p.StartTimeout)
	for _, k := range slices.Sorted(maps.Keys(p.Env)) { // the same message every time
		if !envKeyRe.MatchString(k) {
			v.add(at+".env", fmt.Sprintf("%q is not a valid variable name", k))
		}
	}
	validateRestart(p.Restart, v, at+".restart")
	validateRecycle(p.Recycle, v, at+".recycle")
	validateWatchdog(p.Watchdog, v, at+".watchdog")
	validateSessions(p.Sessions, v, at+".sessions")
}

func validateSessions(s SessionPolicy, v *validator, at string) {
	if s.MaxSessions < 0 {
		v.add(at+".max_sessions", fmt.Sprintf("must be ≥ 1 (got %d); 0 means the default, %d", s.MaxSessions, actors.DefaultMaxSessions))
	}
	if s.MaxPerWorker < 0 {
		v.add(at+".max_per_worker", fmt.Sprintf("must be ≥ 0 (got %d); 0 means no limit", s.MaxPerWorker))
	}
	v.nonNegative(at+".idle_ttl", s.IdleTTL)
	v.nonNegative(at+".drain_timeout", s.DrainTimeout)
}

func validateWatchdog(w WatchdogPolicy, v *validator, at string) {
	v.nonNegative(at+".hang_grace", w.HangGrace)
	v.nonNegative(at+".health_interval", w.HealthInterval)
	v.nonNegative(at+".health_timeout", w.HealthTimeout)
	if w.HealthFailures < 0 {
		v.add(at+".health_failures", fmt.Sprintf("must be ≥ 1 (got %d); 0 means the default, %d", w.HealthFailures, supervision.DefaultHealthFailures))
	}
}

func validateRecycle(r RecyclePolicy, v *validator, at string) {
	v.nonNegative(at+".max_age", r.MaxAge)
	v.nonNegative(at+".age_jitter", r.AgeJitter)
	v.nonNegative(at+".min_lifetime", r.MinLifetime)
	v.nonNegative(at+".check_interval", r.CheckInterval)
	v.nonNegative(at+".drain_timeout", r.DrainTimeout)
	if r.MaxRequests < 0 {
		v.add(at+".max_requests", fmt.Sprintf("must be ≥ 0 (got %d); 0 turns it off", r.MaxRequests))
	}
	if r.RequestsJitter < 0 {
		v.add(at+".requests_jitter", fmt.Sprintf("must be ≥ 0 (got %d); 0 means the default", r.RequestsJitter))
	}
	if r.MaxConcurrent < 0 {
		v.add(at+".max_concurrent", fmt.Sprintf("must be ≥ 1 (got %d); 0 means the default, 1", r.MaxConcurrent))
	}
	if r.HardMemoryLimit > 0 && r.MaxMemory > 0 && r.HardMemoryLimit <= r.MaxMemory {
		v.add(at+".hard_memory_limit", fmt.Sprintf("%s must be above max_memory (%s): the worker is first drained at max_memory, killed at the hard limit",
			supervision.FormatBytes(r.HardMemoryLimit), supervision.FormatBytes(r.MaxMemory)))
	}
}

func validateRestart(r RestartPolicy, v *validator, at string) {
	if r.MaxRestarts < 0 {
		v.add(at+".max_restarts", fmt.Sprintf("must be ≥ 1 (got %d); 0 means the default", r.MaxRestarts))
	}
	v.nonNegative(at+".period", r.Period)
	v.nonNegative(at+".initial_backoff", r.InitialBackoff)
	v.nonNegative(at+".max_backoff", r.MaxBackoff)
	if !r.Type.Valid() {
		v.add(at+".type", fmt.Sprintf("%q is not a restart type (permanent, transient, temporary)", r.Type))
	}
	if !(r.Jitter >= 0 && r.Jitter <= 1) { // NaN too
		v.add(at+".jitter", fmt.Sprintf("must be within 0 and 1 (got %g)", r.Jitter))
	}
	maxBackoff, which := r.MaxBackoff, ""
	if maxBackoff == 0 {
		maxBackoff, which = supervision.DefaultPolicy().MaxBackoff, " (the default): raise max_backoff too"
	}
	if r.InitialBackoff > 0 && maxBackoff > 0 && r.InitialBackoff > maxBackoff {
		v.add(at+".initial_backoff", fmt.Sprintf("%s is more than max_backoff %s%s", r.InitialBackoff, maxBackoff, which))
	}
}

type validator struct{ fields []FieldError }

func (v *validator) add(path, problem string) {
	v.fields = append(v.fields, FieldError{Path: path, Problem: problem})
}

func (v *validator) nonNegative(path string, d time.Duration) {
	if d < 0 {
		v.add(path, fmt.Sprintf("must be ≥ 0 (got %s); 0 means the default", d))
	}
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	c.CallTimeout = orDuration(c.CallTimeout, DefaultCallTimeout)
	c.ShutdownGrace = orDuration(c.ShutdownGrace, DefaultShutdownGrace)
	c.KillAfter = orDuration(c.KillAfter, DefaultKillAfter)
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.Logger == nil {
		c.Logger = hclog.New(&hclog.LoggerOptions{Name: "snakepit", Level: hclog.Info})
	}
	pools := make([]PoolConfig, len(c.Pools))
	for i, p := range c.Pools {
		if p.Size == 0 {
			p.Size = DefaultPoolSize
		}
		if p.QueueSize == 0 {
			p.QueueSize = DefaultQueueSize
		}
		if p.Python == "" {
			p.Python = c.Python
		}
		p.StartTimeout = orDuration(p.StartTimeout, DefaultStartTimeout)
		p.Restart = p.Restart.WithDefaults()
		p.Watchdog = p.Watchdog.WithDefaults()
		pools[i] = p
	}
	c.Pools = pools
	return c
}

func orDuration(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// filepathBase is the last element of a slash- or backslash-separated path.
func filepathBase(p string) string {
	if i := strings.LastIndexAny(p, "/\\"); i >= 0 {
		return p[i+1:]
	}
	return p
}
