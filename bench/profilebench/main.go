// Command profilebench compares a pool of the "process" profile with pools of
// the "thread" profile at the same total capacity (by default 16: 16 workers
// of capacity 1 against 1 worker of 16 threads and 2 workers of 8), on a
// GIL build of CPython and on a free-threaded one, in one run on one machine.
// It measures the memory of each pool's workers once ready and idle, and the
// throughput and latency of an I/O-bound, a CPU-bound and a GIL-releasing
// tool, and of the CPU-bound loop with a shared int constant in it
// (testdata/pyadapters/profile_bench.py), with many concurrent callers.
// It prints a markdown report to stdout (progress goes to stderr). See
// docs/benchmarks.md.
//
//	go run ./bench/profilebench [-columns process:16x1,thread:1x16,thread:2x8] [-callers 32]
//	    [-rounds 5] [-duration 1.5s] [-warmup 500ms] [-tools io,cpu,gil_free,cpu_shared] [-cpu-target 5ms]
//	    [-mem-starts 2] [-idle 500ms] [-python PATH] [-python-ft PATH]
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/bench/harness"
	"github.com/snakepit-go/snakepit/pyworker"
)

// adapter is the Python module every pool serves.
const adapter = "profile_bench"

// column is one pool shape: profile, workers and capacity per worker.
type column struct {
	profile string // "process" or "thread"
	workers int
	threads int // capacity of one worker (1 for process)
}

func (c column) name() string { return fmt.Sprintf("%s %d×%d", c.profile, c.workers, c.threads) }
func (c column) pool() string { return fmt.Sprintf("%s-%dx%d", c.profile, c.workers, c.threads) }

func (c column) config(python, adapterDir string) snakepit.PoolConfig {
	p := snakepit.PoolConfig{Name: c.pool(), Adapter: adapter, Size: c.workers, Profile: c.profile,
		Python: python, PythonPath: []string{adapterDir}, Transport: "native"}
	if c.profile == "thread" {
		p.ThreadsPerWorker = c.threads
	}
	return p
}

type options struct {
	columns    []column
	callers    int
	rounds     int
	duration   time.Duration
	warmup     time.Duration
	tools      []string
	ioSleep    time.Duration
	cpuTarget  time.Duration
	hashBytes  int
	memStarts  int
	idle       time.Duration
	python     string
	pythonFT   string
	adapterDir string
}

// knownTools are the tools a run may measure; defaultTools run unless
// -tools says otherwise.
var (
	knownTools   = []string{"io", "cpu", "gil_free", "cpu_shared"}
	defaultTools = knownTools
)

func main() {
	var o options
	columns := flag.String("columns", "process:16x1,thread:1x16,thread:2x8",
		"comma-separated PROFILE:WORKERSxTHREADS pools to compare; the first is the baseline of the ratios")
	flag.IntVar(&o.callers, "callers", 32, "concurrent callers in every round")
	flag.IntVar(&o.rounds, "rounds", 5, "measured rounds per tool and column; the report gives the median of the rounds")
	flag.DurationVar(&o.duration, "duration", 1500*time.Millisecond, "length of one measured round")
	flag.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unmeasured calls per tool and column before its rounds")
	tools := flag.String("tools", strings.Join(defaultTools, ","), "comma-separated tools to run ("+strings.Join(knownTools, ", ")+")")
	flag.DurationVar(&o.ioSleep, "io", 10*time.Millisecond, "how long one io call sleeps")
	flag.DurationVar(&o.cpuTarget, "cpu-target", 5*time.Millisecond, "single-threaded duration of one cpu call, calibrated once at start")
	flag.IntVar(&o.hashBytes, "hash-bytes", 1<<20, "bytes hashed by one gil_free call")
	flag.IntVar(&o.memStarts, "mem-starts", 2, "starts of each pool, alone, for the memory table")
	flag.DurationVar(&o.idle, "idle", 500*time.Millisecond, "how long a started pool idles before its memory is read")
	flag.StringVar(&o.python, "python", defaultPython(), "the GIL interpreter (\"\": the first Python 3.11+, as the runtime picks it)")
	flag.StringVar(&o.pythonFT, "python-ft", defaultPythonFT(), "the free-threaded interpreter (skipped when it does not exist; \"\" skips it)")
	flag.Parse()
	for _, s := range strings.Split(*columns, ",") {
		c, err := parseColumn(strings.TrimSpace(s))
		if err != nil {
			fail(2, err)
		}
		o.columns = append(o.columns, c)
	}
	for _, t := range strings.Split(*tools, ",") {
		t = strings.TrimSpace(t)
		if !contains(knownTools, t) {
			fail(2, fmt.Errorf("unknown tool %q (known: %s)", t, strings.Join(knownTools, ", ")))
		}
		o.tools = append(o.tools, t)
	}
	if len(o.columns) < 1 || o.callers < 1 || o.rounds < 1 || o.duration <= 0 || o.warmup < 0 || o.ioSleep < 0 ||
		o.cpuTarget <= 0 || o.hashBytes < 1 || o.memStarts < 0 || o.idle < 0 {
		fail(2, errors.New("-callers, -rounds, -hash-bytes ≥ 1; -duration, -cpu-target > 0; -warmup, -io, -mem-starts, -idle ≥ 0"))
	}
	o.adapterDir = harness.DefaultAdapterDir()
	if err := run(o); err != nil {
		fail(1, err)
	}
}

func fail(code int, err error) {
	fmt.Fprintln(os.Stderr, "profilebench:", err)
	os.Exit(code)
}

func parseColumn(s string) (column, error) {
	bad := fmt.Errorf("bad column %q (want PROFILE:WORKERSxTHREADS, e.g. thread:1x16)", s)
	profile, shape, ok := strings.Cut(s, ":")
	w, t, ok2 := strings.Cut(shape, "x")
	workers, err1 := strconv.Atoi(w)
	threads, err2 := strconv.Atoi(t)
	if !ok || !ok2 || err1 != nil || err2 != nil || workers < 1 || threads < 1 {
		return column{}, bad
	}
	switch profile {
	case "process":
		if threads != 1 {
			return column{}, fmt.Errorf("column %q: a process-profile worker has capacity 1", s)
		}
	case "thread":
	default:
		return column{}, fmt.Errorf("column %q: profile must be process or thread", s)
	}
	return column{profile: profile, workers: workers, threads: threads}, nil
}

// defaultPython is the system's /usr/bin/python3 when it exists.
func defaultPython() string {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	return ""
}

// defaultPythonFT is where `make python-ft` puts the free-threaded CPython.
func defaultPythonFT() string {
	cache := os.Getenv("SNAKEPIT_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		cache = filepath.Join(home, ".cache", "snakepit")
	}
	return filepath.Join(cache, "python3.13t", "bin", "python3.13t")
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------- model

// sample is one column's numbers in one round.
type sample struct {
	rate     float64
	p50, p99 time.Duration
	calls    int
	pyCores  float64 // CPU time of the pool's Python processes / wall time
	goCores  float64 // CPU time of this Go process / wall time
	faults   float64 // minor page faults of the pool's Python processes per call
}

// cell is one tool on one interpreter, with every round of every column.
type cell struct {
	tool   string
	rounds [][]sample // per column
}

// memSample is one start of a pool, alone, once ready and idle.
type memSample struct {
	mem   harness.Memory
	ready time.Duration // snakepit.Start's duration
}

// python is everything measured on one interpreter.
type python struct {
	label      string // "3.11.2", "3.13.5t"
	in         pyworker.Interpreter
	cpuSeconds float64       // median single-threaded cpu(n), in a process worker
	mem        [][]memSample // per column, per start
	health     []snakepit.PoolHealth
	afterUSS   []uint64 // per column: USS sum after every round
	cells      []*cell
}

type report struct {
	o          options
	pythons    []*python
	ftNote     string
	n          int     // cpu(n)
	nSeconds   float64 // calibration's own timing
	took       time.Duration
	loadBefore string
}

// ---------------------------------------------------------------- run

func run(o options) error {
	ctx := context.Background()
	r := &report{o: o, loadBefore: harness.LoadAvg()}
	began := time.Now()
	log := hclog.New(&hclog.LoggerOptions{Name: "profilebench", Level: hclog.Warn, Output: os.Stderr})

	gil, err := pyworker.FindInterpreter(ctx, o.python, nil)
	if err != nil {
		return err
	}
	ins := []pyworker.Interpreter{gil}
	switch _, statErr := os.Stat(o.pythonFT); {
	case o.pythonFT == "":
		r.ftNote = "no free-threaded interpreter given (-python-ft)"
	case statErr != nil:
		r.ftNote = fmt.Sprintf("no free-threaded interpreter at %s (`make python-ft` builds one)", o.pythonFT)
	default:
		ft, err := pyworker.FindInterpreter(ctx, o.pythonFT, nil)
		if err != nil {
			return err
		}
		ins = append(ins, ft)
	}
	for i, in := range ins {
		p := &python{label: in.Version, in: in}
		if in.FreeThreaded {
			p.label += "t"
		}
		r.pythons = append(r.pythons, p)
		if err := measureMemory(ctx, o, p, log); err != nil {
			return fmt.Errorf("memory of Python %s: %w", p.label, err)
		}
		if err := measureCalls(ctx, o, r, p, i == 0, log); err != nil {
			return fmt.Errorf("calls on Python %s: %w", p.label, err)
		}
	}
	r.took = time.Since(began)
	r.write(os.Stdout)
	return nil
}

func startRuntime(ctx context.Context, o options, in pyworker.Interpreter, cols []column, log hclog.Logger) (*snakepit.Runtime, error) {
	cfg := snakepit.Config{Python: in.Path, Logger: log}
	for _, c := range cols {
		cfg.Pools = append(cfg.Pools, c.config(in.Path, o.adapterDir))
	}
	return snakepit.Start(ctx, cfg)
}

func stopRuntime(rt *snakepit.Runtime) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = rt.Stop(ctx)
}

// checkPool fails unless the pool runs the column's profile with the
// column's capacity on every worker.
func checkPool(h snakepit.PoolHealth, c column) error {
	if h.Profile != c.profile {
		return fmt.Errorf("pool %s runs the %q profile, want %q", h.Name, h.Profile, c.profile)
	}
	if len(h.Workers) != c.workers || h.Ready != c.workers {
		return fmt.Errorf("pool %s: %d workers, %d ready, want %d", h.Name, len(h.Workers), h.Ready, c.workers)
	}
	for _, w := range h.Workers {
		if w.Capacity != c.threads {
			return fmt.Errorf("pool %s: worker %s has capacity %d, want %d", h.Name, w.ID, w.Capacity, c.threads)
		}
	}
	return nil
}

// measureMemory starts each column's pool alone, o.memStarts times
// (interleaved), lets it idle, and sums the memory of its workers. Alone,
// because the workers of other pools of the same interpreter would share the
// interpreter's pages with it and lower its PSS.
func measureMemory(ctx context.Context, o options, p *python, log hclog.Logger) error {
	p.mem = make([][]memSample, len(o.columns))
	for s := 0; s < o.memStarts; s++ {
		for k := range o.columns {
			c := o.columns[(k+s)%len(o.columns)]
			fmt.Fprintf(os.Stderr, "profilebench: Python %s: memory, start %d/%d, %s\n", p.label, s+1, o.memStarts, c.name())
			t0 := time.Now()
			rt, err := startRuntime(ctx, o, p.in, []column{c}, log)
			if err != nil {
				return err
			}
			ready := time.Since(t0)
			m, err := idleMemory(ctx, o, rt, c)
			stopRuntime(rt)
			if err != nil {
				return err
			}
			i := indexOf(o.columns, c)
			p.mem[i] = append(p.mem[i], memSample{mem: m, ready: ready})
		}
	}
	return nil
}

func idleMemory(ctx context.Context, o options, rt *snakepit.Runtime, c column) (harness.Memory, error) {
	time.Sleep(o.idle)
	h, err := harness.PoolHealth(ctx, rt, c.pool())
	if err != nil {
		return harness.Memory{}, err
	}
	if err := checkPool(h, c); err != nil {
		return harness.Memory{}, err
	}
	pids, err := harness.PoolPids(ctx, rt, c.pool())
	if err != nil {
		return harness.Memory{}, err
	}
	return harness.SumMemory(pids)
}

func indexOf(cols []column, c column) int {
	for i, x := range cols {
		if x == c {
			return i
		}
	}
	return -1
}

// tool is what one benchmarked call sends and how its reply is checked.
type tool struct {
	args  map[string]any
	check func(*snakepit.Result) error
}

func makeTool(name string, o options, n int) tool {
	switch name {
	case "io":
		secs := o.ioSleep.Seconds()
		return tool{args: map[string]any{"seconds": secs}, check: func(res *snakepit.Result) error {
			var got float64
			if err := res.Decode(&got); err != nil {
				return err
			}
			if got != secs {
				return fmt.Errorf("io returned %v, want %v", got, secs)
			}
			return nil
		}}
	case "cpu", "cpu_shared":
		want := spin(n, 251)
		if name == "cpu_shared" {
			want = spin(n, 1000003)
		}
		return tool{args: map[string]any{"n": n}, check: func(res *snakepit.Result) error {
			var got int64
			if err := res.Decode(&got); err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("%s(%d) returned %d, want %d", name, n, got, want)
			}
			return nil
		}}
	default: // gil_free
		data := make([]byte, o.hashBytes)
		for i := range data {
			data[i] = byte(i*31 + i>>9)
		}
		sum := sha256.Sum256(data)
		want := hex.EncodeToString(sum[:])
		return tool{args: map[string]any{"data": data}, check: func(res *snakepit.Result) error {
			var got string
			if err := res.Decode(&got); err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("gil_free returned %q, want %q", got, want)
			}
			return nil
		}}
	}
}

// spin is the adapter's loop (_spin: m = 251, _spin_shared: m = 1000003),
// for checking a cpu reply.
func spin(n int, m int64) int64 {
	var acc int64
	for i := int64(0); i < int64(n); i++ {
		acc = (acc + i*i) % m
	}
	return acc
}

// measureCalls starts every column's pool in one runtime, calibrates cpu's n
// on the first interpreter, and runs every tool's rounds.
func measureCalls(ctx context.Context, o options, r *report, p *python, first bool, log hclog.Logger) error {
	fmt.Fprintf(os.Stderr, "profilebench: Python %s: starting %d pools\n", p.label, len(o.columns))
	rt, err := startRuntime(ctx, o, p.in, o.columns, log)
	if err != nil {
		return err
	}
	defer stopRuntime(rt)
	pids := make([][]int, len(o.columns))
	for i, c := range o.columns {
		h, err := harness.PoolHealth(ctx, rt, c.pool())
		if err != nil {
			return err
		}
		if err := checkPool(h, c); err != nil {
			return err
		}
		if pids[i], err = harness.PoolPids(ctx, rt, c.pool()); err != nil {
			return err
		}
	}
	// Single-threaded timings run on one worker of the first column, with
	// nothing else running in the pools.
	base := o.columns[0].pool()
	if first {
		res, err := rt.Call(ctx, base, "calibrate", map[string]any{"target_seconds": o.cpuTarget.Seconds()})
		if err != nil {
			return fmt.Errorf("calibrate: %w", err)
		}
		var cal struct {
			N       int     `json:"n"`
			Seconds float64 `json:"seconds"`
		}
		if err := res.Decode(&cal); err != nil {
			return fmt.Errorf("calibrate: %w", err)
		}
		r.n, r.nSeconds = cal.N, cal.Seconds
		fmt.Fprintf(os.Stderr, "profilebench: cpu(n): n = %d (%.2f ms on one thread of Python %s)\n", r.n, 1e3*cal.Seconds, p.label)
	}
	res, err := rt.Call(ctx, base, "time_cpu", map[string]any{"n": r.n})
	if err != nil {
		return fmt.Errorf("time_cpu: %w", err)
	}
	if err := res.Decode(&p.cpuSeconds); err != nil {
		return fmt.Errorf("time_cpu: %w", err)
	}

	for _, name := range o.tools {
		t := makeTool(name, o, r.n)
		c := &cell{tool: name, rounds: make([][]sample, len(o.columns))}
		calls := make([]harness.Call, len(o.columns))
		for i, col := range o.columns {
			pool := col.pool()
			calls[i] = func(ctx context.Context, _ int) error {
				res, err := rt.Call(ctx, pool, name, t.args)
				if err != nil {
					return err
				}
				return t.check(res)
			}
			// One checked call, then the warm-up.
			if err := calls[i](ctx, 0); err != nil {
				return fmt.Errorf("%s on %s: %w", name, col.name(), err)
			}
			if o.warmup > 0 {
				if _, err := harness.Measure(ctx, calls[i], o.callers, o.warmup); err != nil {
					return fmt.Errorf("%s on %s, warm-up: %w", name, col.name(), err)
				}
			}
		}
		fmt.Fprintf(os.Stderr, "profilebench: Python %s: %s, %d rounds × %d columns\n", p.label, name, o.rounds, len(o.columns))
		// Round r starts with column r mod (columns), so drift on the
		// machine hits every column alike.
		for round := 0; round < o.rounds; round++ {
			for k := range o.columns {
				i := (k + round) % len(o.columns)
				s, err := measureRound(ctx, o, calls[i], pids[i])
				if err != nil {
					return fmt.Errorf("%s on %s: %w", name, o.columns[i].name(), err)
				}
				c.rounds[i] = append(c.rounds[i], s)
			}
		}
		p.cells = append(p.cells, c)
	}

	// The pools after the rounds: same workers (no restarts), and their
	// private memory now that every tool has run.
	p.health = make([]snakepit.PoolHealth, len(o.columns))
	p.afterUSS = make([]uint64, len(o.columns))
	for i, c := range o.columns {
		h, err := harness.PoolHealth(ctx, rt, c.pool())
		if err != nil {
			return err
		}
		p.health[i] = h
		now, err := harness.PoolPids(ctx, rt, c.pool())
		if err != nil {
			return err
		}
		if !slicesEqual(now, pids[i]) {
			return fmt.Errorf("pool %s: workers were replaced during the rounds (pids %v, then %v)", c.pool(), pids[i], now)
		}
		m, err := harness.SumMemory(now)
		if err != nil {
			return err
		}
		p.afterUSS[i] = m.USS
	}
	return nil
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func measureRound(ctx context.Context, o options, call harness.Call, pids []int) (sample, error) {
	runtime.GC()
	py0, err := harness.ProcessCPU(pids)
	if err != nil {
		return sample{}, err
	}
	fl0, err := harness.MinorFaults(pids)
	if err != nil {
		return sample{}, err
	}
	go0 := harness.SelfCPU()
	run, err := harness.Measure(ctx, call, o.callers, o.duration)
	if err != nil {
		return sample{}, err
	}
	go1 := harness.SelfCPU()
	py1, err := harness.ProcessCPU(pids)
	if err != nil {
		return sample{}, err
	}
	fl1, err := harness.MinorFaults(pids)
	if err != nil {
		return sample{}, err
	}
	wall := run.Elapsed.Seconds()
	return sample{rate: run.Rate(), p50: run.Quantile(0.5), p99: run.Quantile(0.99), calls: run.Calls(),
		pyCores: (py1 - py0).Seconds() / wall, goCores: (go1 - go0).Seconds() / wall,
		faults: float64(fl1-fl0) / float64(max(run.Calls(), 1))}, nil
}

// ---------------------------------------------------------------- report

func rate(s sample) float64    { return s.rate }
func p50(s sample) float64     { return float64(s.p50) }
func p99(s sample) float64     { return float64(s.p99) }
func pyCores(s sample) float64 { return s.pyCores }
func goCores(s sample) float64 { return s.goCores }
func faults(s sample) float64  { return s.faults }
func pyPerCall(s sample) float64 {
	return s.pyCores / s.rate * 1e9 // ns of Python CPU per call
}

func median(ss []sample, f func(sample) float64) float64 {
	xs := make([]float64, len(ss))
	for i, s := range ss {
		xs[i] = f(s)
	}
	return harness.Median(xs)
}

// ratio is the median over rounds of column a's figure over column b's in the
// same round.
func ratio(c *cell, a, b int, f func(sample) float64) float64 {
	xs := make([]float64, len(c.rounds[a]))
	for i, s := range c.rounds[a] {
		xs[i] = f(s) / f(c.rounds[b][i])
	}
	return harness.Median(xs)
}

func spread(ss []sample) string {
	lo, hi := ss[0].rate, ss[0].rate
	for _, s := range ss {
		lo, hi = min(lo, s.rate), max(hi, s.rate)
	}
	return fmt.Sprintf("%.0f%%", 100*(hi-lo)/median(ss, rate))
}

func (r *report) write(w io.Writer) {
	o := r.o
	fmt.Fprintln(w, "# snakepit profile benchmark: process vs thread at equal total capacity")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "- command: `%s`\n", command())
	fmt.Fprintf(w, "- settings: %d callers; %d rounds × %s per tool and column, %s warm-up per tool and column; memory: each pool started alone %d times, read after %s idle; took %s\n",
		o.callers, o.rounds, o.duration, o.warmup, o.memStarts, o.idle, r.took.Round(time.Second))
	fmt.Fprintf(w, "- machine: %s, %d cores (GOMAXPROCS %d), %s/%s, Linux %s\n",
		harness.CPUModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, harness.Kernel())
	fmt.Fprintf(w, "- 1-minute load average before / after the run (after includes the run itself): %s / %s\n", r.loadBefore, harness.LoadAvg())
	var ps []string
	for _, p := range r.pythons {
		gil := "GIL on"
		if !p.in.GILEnabled {
			gil = "GIL off"
		}
		ps = append(ps, fmt.Sprintf("%s (%s, %s)", p.label, p.in.Path, gil))
	}
	fmt.Fprintf(w, "- software: %s; Python %s; native transport\n", runtime.Version(), strings.Join(ps, "; "))
	var cols []string
	for _, c := range o.columns {
		cols = append(cols, fmt.Sprintf("%s (`Profile: %q, Size: %d%s`)", c.name(), c.profile, c.workers, threadsField(c)))
	}
	fmt.Fprintf(w, "- columns (workers × capacity per worker): %s\n", strings.Join(cols, ", "))
	fmt.Fprintf(w, "- tools (%s): io = `time.sleep(%g)`; cpu = a pure-Python loop on small ints, n = %d, calibrated at start to %s on one thread of Python %s (it took %s there);"+
		" gil_free = `hashlib.sha256` of %s sent as bytes; cpu_shared = cpu's loop with a constant outside the small-int range, same n\n",
		"testdata/pyadapters/profile_bench.py", o.ioSleep.Seconds(), r.n, o.cpuTarget, r.pythons[0].label, harness.FmtDur(r.nSeconds*1e9), fmtBytes(o.hashBytes))
	var t1 []string
	for _, p := range r.pythons {
		t1 = append(t1, fmt.Sprintf("%s %s", p.label, harness.FmtDur(p.cpuSeconds*1e9)))
	}
	fmt.Fprintf(w, "- one cpu(%d) call on one thread of an idle worker (median of 7): %s\n", r.n, strings.Join(t1, "; "))
	fmt.Fprintln(w, "- figures are medians over the rounds; ratios are medians of per-round ratios (the columns' rounds are interleaved);"+
		" p50/p99 are exact nearest-rank percentiles of every call of a round; Python cores = CPU time of the pool's worker processes / wall time"+
		" (10 ms resolution), and Python CPU time per call is that over calls/s; page faults: minflt of the pool's workers (/proc/PID/stat) per call;"+
		" Go cores = CPU time of this process (callers and runtime) / wall time")
	if r.ftNote != "" {
		fmt.Fprintf(w, "- free-threaded rows skipped: %s\n", r.ftNote)
	}

	r.writeMemory(w)

	fmt.Fprintln(w)
	fmt.Fprintln(w, "## Calls")
	r.table(w, "Throughput (calls/s):", func(ss []sample) string { return harness.FmtRate(median(ss, rate)) }, rate, "%.2f")
	r.table(w, "Latency p50:", func(ss []sample) string { return harness.FmtDur(median(ss, p50)) }, p50, "%.2f")
	r.table(w, "Latency p99:", func(ss []sample) string { return harness.FmtDur(median(ss, p99)) }, p99, "%.2f")
	r.table(w, "Python cores busy (CPU time of the pool's workers / wall time):", func(ss []sample) string { return fmt.Sprintf("%.2f", median(ss, pyCores)) }, nil, "")
	r.table(w, "Python CPU time per call (the pool's workers):", func(ss []sample) string { return harness.FmtDur(median(ss, pyPerCall)) }, pyPerCall, "%.2f")
	r.table(w, "Minor page faults per call (the pool's workers):", func(ss []sample) string { return fmt.Sprintf("%.0f", median(ss, faults)) }, nil, "")
	r.table(w, fmt.Sprintf("Go cores busy (this process: %d callers and the runtime):", o.callers), func(ss []sample) string { return fmt.Sprintf("%.2f", median(ss, goCores)) }, nil, "")
	r.table(w, "Spread of throughput over the rounds ((max − min) / median):", spread, nil, "")

	fewest, at := -1, ""
	for _, p := range r.pythons {
		for _, c := range p.cells {
			for i, ss := range c.rounds {
				for _, s := range ss {
					if fewest < 0 || s.calls < fewest {
						fewest, at = s.calls, fmt.Sprintf("%s, %s, %s", p.label, c.tool, o.columns[i].name())
					}
				}
			}
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Fewest calls in one measured round: %d (%s).\n", fewest, at)
}

func threadsField(c column) string {
	if c.profile == "thread" {
		return fmt.Sprintf(", ThreadsPerWorker: %d", c.threads)
	}
	return ""
}

// table prints one row per interpreter and tool: f of every column, then, if
// rf is not nil, the per-round ratio of every other column to the first.
func (r *report) table(w io.Writer, title string, f func([]sample) string, rf func(sample) float64, rfmt string) {
	cols := r.o.columns
	fmt.Fprintln(w)
	fmt.Fprintln(w, title)
	fmt.Fprintln(w)
	head := []string{"Python", "tool"}
	for _, c := range cols {
		head = append(head, c.name())
	}
	if rf != nil {
		for _, c := range cols[1:] {
			head = append(head, c.name()+" / "+cols[0].name())
		}
	}
	fmt.Fprintln(w, "| "+strings.Join(head, " | ")+" |")
	fmt.Fprintln(w, "|---|---|"+strings.Repeat("--:|", len(head)-2))
	for _, p := range r.pythons {
		for _, c := range p.cells {
			row := []string{p.label, c.tool}
			for i := range cols {
				row = append(row, f(c.rounds[i]))
			}
			if rf != nil {
				for i := 1; i < len(cols); i++ {
					row = append(row, fmt.Sprintf(rfmt, ratio(c, i, 0, rf)))
				}
			}
			fmt.Fprintln(w, "| "+strings.Join(row, " | ")+" |")
		}
	}
}

func (r *report) writeMemory(w io.Writer) {
	cols := r.o.columns
	if r.o.memStarts == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "## Memory")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Each pool started alone (its own runtime, no other pool's workers alive), %d times, interleaved;"+
		" read from /proc/PID/smaps_rollup of every worker of the pool after %s idle once `snakepit.Start` returned, and summed"+
		" (USS = Private_Clean + Private_Dirty; RSS counts shared pages once per process). Medians over the starts; ratios of the medians."+
		" *USS after the rounds*: the same pools' workers in the benchmark's runtime, after every tool's rounds.\n", r.o.memStarts, r.o.idle)
	fmt.Fprintln(w)
	base := cols[0].name()
	fmt.Fprintf(w, "| Python | pool | processes | start (all ready) | PSS | PSS of %s / PSS | USS | RSS | PSS per call slot | USS after the rounds | USS after of %s / USS after | restarts |\n", base, base)
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, p := range r.pythons {
		basePSS := medMem(p.mem[0], func(m memSample) float64 { return float64(m.mem.PSS) })
		for i, c := range cols {
			if len(p.mem[i]) == 0 {
				continue // -mem-starts 0
			}
			pss := medMem(p.mem[i], func(m memSample) float64 { return float64(m.mem.PSS) })
			uss := medMem(p.mem[i], func(m memSample) float64 { return float64(m.mem.USS) })
			rss := medMem(p.mem[i], func(m memSample) float64 { return float64(m.mem.RSS) })
			ready := medMem(p.mem[i], func(m memSample) float64 { return float64(m.ready) })
			after, afterRatio, restarts := "—", "—", "—"
			if p.afterUSS != nil {
				after = harness.FmtMiB(float64(p.afterUSS[i]))
				afterRatio = fmt.Sprintf("%.1f", float64(p.afterUSS[0])/float64(p.afterUSS[i]))
				n := 0
				for _, wh := range p.health[i].Workers {
					n += wh.Restarts
				}
				restarts = strconv.Itoa(n)
			}
			fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %.1f | %s | %s | %s | %s | %s | %s |\n", p.label, c.name(), c.workers,
				harness.FmtDur(ready), harness.FmtMiB(pss), basePSS/pss, harness.FmtMiB(uss), harness.FmtMiB(rss), harness.FmtMiB(pss/float64(c.workers*c.threads)),
				after, afterRatio, restarts)
		}
	}
}

func medMem(ms []memSample, f func(memSample) float64) float64 {
	xs := make([]float64, len(ms))
	for i, m := range ms {
		xs[i] = f(m)
	}
	return harness.Median(xs)
}

func command() string {
	return strings.Join(append([]string{"go", "run", "./bench/profilebench"}, os.Args[1:]...), " ")
}

func fmtBytes(n int) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
