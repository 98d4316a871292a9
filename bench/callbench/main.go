// Command callbench measures a call through snakepit.Runtime over the native
// and the gRPC transport against raw gRPC calls to the same kind of Python
// worker and against the floor (a minimal Python echo server, bench/floor),
// and the start-up time and memory of a worker of each transport against a
// bare interpreter, in one run on one machine. It prints a markdown report to
// stdout (progress goes to stderr). See docs/benchmarks.md.
//
//	go run ./bench/callbench [-rounds 7] [-duration 800ms] [-warmup 300ms] [-payloads 100B,1MiB]
//	    [-shapes 1x1,16x1] [-floor-pipe-size 0] [-starts 5] [-idle 300ms] [-python-ft PATH]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/snakepit-go/snakepit/bench/floor"
	"github.com/snakepit-go/snakepit/bench/harness"
	"github.com/snakepit-go/snakepit/pyworker"
)

// shape is one concurrency/worker-count combination. Every path uses
// `workers` Python processes; where a path has no pool, caller g is pinned to
// process g mod workers.
type shape struct {
	callers, workers int
}

type options struct {
	rounds   int
	duration time.Duration
	warmup   time.Duration
	payloads []harness.Payload
	shapes   []shape
	pipeSize int
	starts   int
	idle     time.Duration
	pythonFT string
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 7, "measured rounds per cell and path; the report gives the median of the rounds")
	flag.DurationVar(&o.duration, "duration", 800*time.Millisecond, "length of one measured round")
	flag.DurationVar(&o.warmup, "warmup", 300*time.Millisecond, "unmeasured calls per cell and path before its rounds")
	payloads := flag.String("payloads", "100B,1MiB", "comma-separated payloads to run (100B, 1MiB)")
	shapes := flag.String("shapes", "1x1,16x1", "comma-separated CALLERSxWORKERS shapes, e.g. 1x1,16x1,16x2")
	flag.IntVar(&o.pipeSize, "floor-pipe-size", 0, "pipe buffer size of the pipe floor servers in bytes (0: the system's default, 64 KiB on Linux)")
	flag.IntVar(&o.starts, "starts", 5, "starts per process kind in the start-up and memory section (0 skips it)")
	flag.DurationVar(&o.idle, "idle", 300*time.Millisecond, "how long a started process idles before its memory is read")
	flag.StringVar(&o.pythonFT, "python-ft", defaultPythonFT(),
		"free-threaded CPython for the start-up section's native worker (skipped when it does not exist; \"\" skips it)")
	flag.Parse()
	for _, name := range strings.Split(*payloads, ",") {
		p, ok := harness.Payloads[strings.TrimSpace(name)]
		if !ok {
			fmt.Fprintf(os.Stderr, "callbench: unknown payload %q (known: 100B, 1MiB)\n", name)
			os.Exit(2)
		}
		o.payloads = append(o.payloads, p)
	}
	for _, s := range strings.Split(*shapes, ",") {
		c, w, ok := strings.Cut(strings.TrimSpace(s), "x")
		callers, err1 := strconv.Atoi(c)
		workers, err2 := strconv.Atoi(w)
		if !ok || err1 != nil || err2 != nil || callers < 1 || workers < 1 {
			fmt.Fprintf(os.Stderr, "callbench: bad shape %q (want CALLERSxWORKERS, e.g. 16x1)\n", s)
			os.Exit(2)
		}
		o.shapes = append(o.shapes, shape{callers, workers})
	}
	if o.rounds < 1 || o.duration <= 0 || o.warmup < 0 || o.starts < 0 || o.idle < 0 || o.pipeSize < 0 {
		fmt.Fprintln(os.Stderr, "callbench: -rounds must be ≥ 1, -duration > 0, -warmup, -starts, -idle and -floor-pipe-size ≥ 0")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "callbench:", err)
		os.Exit(1)
	}
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

// sample is one path's numbers in one round.
type sample struct {
	rate         float64
	p50, p99     time.Duration
	calls        int
	goCPU, pyCPU time.Duration // CPU time per call: this Go process, the path's Python processes
}

// The paths compared. cappedPath and floorCappedPath run only where callers
// outnumber workers: elsewhere their cap never binds and they are the raw
// and the floor socket path.
const (
	nativePath = iota
	grpcPath
	rawPath
	cappedPath
	floorSocketPath
	floorCappedPath
	floorPipePath
	nPaths
)

var pathNames = [nPaths]string{"native", "gRPC", "raw gRPC", "raw-capped", "floor socket", "floor-capped", "floor pipe"}

// cell is one payload × shape, with every round of every path it runs.
type cell struct {
	payload harness.Payload
	shape   shape
	rounds  [nPaths][]sample
}

func (c *cell) name() string {
	return fmt.Sprintf("%s, %d callers, %d worker(s)", c.payload.Name, c.shape.callers, c.shape.workers)
}

func (c *cell) capped() bool { return c.shape.callers > c.shape.workers }

func run(o options) error {
	ctx := context.Background()
	began, loadBefore := time.Now(), harness.LoadAvg()

	// Start-up and memory first, with none of the benchmark's other Python
	// processes alive: they would share pages with the one measured.
	var st *startupReport
	if o.starts > 0 {
		var err error
		if st, err = measureStartup(ctx, o); err != nil {
			return fmt.Errorf("start-up: %w", err)
		}
	}

	maxWorkers := 0
	var poolSizes []int
	for _, s := range o.shapes {
		maxWorkers = max(maxWorkers, s.workers)
		if !slices.Contains(poolSizes, s.workers) {
			poolSizes = append(poolSizes, s.workers)
		}
	}
	fmt.Fprintln(os.Stderr, "callbench: starting the runtime, the raw workers and the floor servers")
	env, err := harness.Start(ctx, harness.Options{PoolSizes: poolSizes, Transports: []string{"native", "grpc"},
		RawWorkers: maxWorkers, FloorServers: maxWorkers, FloorPipeSize: o.pipeSize})
	if err != nil {
		return err
	}
	defer env.Close()

	var cells []*cell
	total := len(o.payloads) * len(o.shapes)
	for _, p := range o.payloads {
		for _, s := range o.shapes {
			c := &cell{payload: p, shape: s}
			fmt.Fprintf(os.Stderr, "callbench: cell %d/%d: %s\n", len(cells)+1, total, c.name())
			if err := measureCell(ctx, env, o, c); err != nil {
				return fmt.Errorf("%s: %w", c.name(), err)
			}
			cells = append(cells, c)
		}
	}
	report(os.Stdout, env, o, cells, st, time.Since(began), loadBefore)
	return nil
}

// measureCell warms every path up, then runs o.rounds rounds of each,
// interleaved: round r starts with path r mod (number of paths) and goes on in
// order, so drift on the machine hits every path alike.
func measureCell(ctx context.Context, env *harness.Env, o options, c *cell) error {
	type path struct {
		id   int
		call harness.Call
		pids []int // the Python processes it calls
	}
	n := c.shape.workers
	var paths []path
	for _, t := range []struct {
		id        int
		transport string
	}{{nativePath, "native"}, {grpcPath, "grpc"}} {
		pool := harness.PoolName(t.transport, n)
		pids, err := env.RuntimePids(ctx, pool)
		if err != nil {
			return err
		}
		paths = append(paths, path{t.id, env.RuntimeCall(pool, c.payload), pids})
	}
	rawPids := env.RawPids(n)
	paths = append(paths, path{rawPath, env.RawCall(n, c.payload), rawPids})
	if c.capped() {
		paths = append(paths, path{cappedPath, env.RawCappedCall(n, c.payload), rawPids})
	}
	sockPids := env.FloorPids(floor.Socket, n)
	paths = append(paths, path{floorSocketPath, env.FloorCall(floor.Socket, n, c.payload), sockPids})
	if c.capped() {
		paths = append(paths, path{floorCappedPath, env.FloorCappedCall(floor.Socket, n, c.payload), sockPids})
	}
	paths = append(paths, path{floorPipePath, env.FloorCall(floor.Pipe, n, c.payload), env.FloorPids(floor.Pipe, n)})
	if o.warmup > 0 {
		for _, p := range paths {
			if _, err := harness.Measure(ctx, p.call, c.shape.callers, o.warmup); err != nil {
				return fmt.Errorf("%s warm-up: %w", pathNames[p.id], err)
			}
		}
	}
	for r := 0; r < o.rounds; r++ {
		for i := range paths {
			p := paths[(i+r)%len(paths)]
			runtime.GC() // no garbage of the previous run is collected during this one
			go0, py0, err := cpuNow(p.pids)
			if err != nil {
				return err
			}
			m, err := harness.Measure(ctx, p.call, c.shape.callers, o.duration)
			if err != nil {
				return fmt.Errorf("%s: %w", pathNames[p.id], err)
			}
			go1, py1, err := cpuNow(p.pids)
			if err != nil {
				return err
			}
			calls := time.Duration(max(m.Calls(), 1))
			c.rounds[p.id] = append(c.rounds[p.id], sample{rate: m.Rate(), p50: m.Quantile(0.50), p99: m.Quantile(0.99),
				calls: m.Calls(), goCPU: (go1 - go0) / calls, pyCPU: (py1 - py0) / calls})
		}
	}
	return nil
}

// cpuNow is the CPU time used so far by this process and by the processes pids.
func cpuNow(pids []int) (self, workers time.Duration, err error) {
	self = harness.SelfCPU()
	workers, err = harness.ProcessCPU(pids)
	return self, workers, err
}

// ---------------------------------------------------------------- start-up

// startupRow is one kind of process, started o.starts times.
type startupRow struct {
	python  string // interpreter label
	process string
	target  harness.StartupTarget
	samples []harness.StartupSample
	bare    *startupRow // the same interpreter's bare baseline
	imports *startupRow // ... and its bare + adapter imports baseline
}

type startupReport struct {
	rows    []*startupRow
	pythons []string // "version: path" of each interpreter
	ftNote  string   // why the free-threaded rows are missing, if they are
}

func measureStartup(ctx context.Context, o options) (*startupReport, error) {
	grpcPython, err := pyworker.FindInterpreter(ctx, "", pyworker.GRPCModules)
	if err != nil {
		return nil, err
	}
	st := &startupReport{}
	addInterpreter := func(label string, in pyworker.Interpreter, transports ...pyworker.Transport) {
		bare := &startupRow{python: label, process: "bare interpreter",
			target: harness.StartupTarget{Kind: harness.Bare, Interpreter: in}}
		pkg := &startupRow{python: label, process: "bare + `import snakepit`",
			target: harness.StartupTarget{Kind: harness.BarePackage, Interpreter: in}}
		imports := &startupRow{python: label, process: "bare + adapter imports",
			target: harness.StartupTarget{Kind: harness.BareImports, Interpreter: in}}
		st.rows = append(st.rows, bare, pkg, imports)
		for _, t := range transports {
			st.rows = append(st.rows, &startupRow{python: label, process: t.Name() + " worker",
				target: harness.StartupTarget{Kind: harness.Worker, Interpreter: in, Transport: t},
				bare:   bare, imports: imports})
		}
	}
	st.pythons = append(st.pythons, fmt.Sprintf("%s: %s", grpcPython.Version, grpcPython.Path))
	addInterpreter(grpcPython.Version, grpcPython, pyworker.Native{}, pyworker.GRPC{})
	switch _, statErr := os.Stat(o.pythonFT); {
	case o.pythonFT == "":
		st.ftNote = "no free-threaded interpreter given (-python-ft)"
	case statErr != nil:
		st.ftNote = fmt.Sprintf("no free-threaded interpreter at %s (`make python-ft` builds one)", o.pythonFT)
	default:
		ft, err := pyworker.FindInterpreter(ctx, o.pythonFT, nil)
		if err != nil {
			return nil, err
		}
		label := ft.Version + "t"
		st.pythons = append(st.pythons, fmt.Sprintf("%s (free-threaded): %s", label, ft.Path))
		addInterpreter(label, ft, pyworker.Native{})
	}

	s, err := harness.NewStartup("", nil)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	fmt.Fprintf(os.Stderr, "callbench: start-up and memory: %d kinds × %d starts\n", len(st.rows), o.starts)
	// One warm-up start of each kind (page cache, .pyc files), then the
	// measured starts, interleaved: one of each kind per round.
	for i := -1; i < o.starts; i++ {
		for _, r := range st.rows {
			sm, err := s.Measure(ctx, r.target, o.idle)
			if err != nil {
				return nil, fmt.Errorf("%s, %s: %w", r.python, r.process, err)
			}
			if i >= 0 {
				r.samples = append(r.samples, sm)
			}
		}
	}
	return st, nil
}

func (r *startupRow) median(f func(harness.StartupSample) float64) float64 {
	xs := make([]float64, len(r.samples))
	for i, s := range r.samples {
		xs[i] = f(s)
	}
	return harness.Median(xs)
}

func readyOf(s harness.StartupSample) float64 { return float64(s.Ready) }
func pssOf(s harness.StartupSample) float64   { return float64(s.Memory.PSS) }
func ussOf(s harness.StartupSample) float64   { return float64(s.Memory.USS) }
func rssOf(s harness.StartupSample) float64   { return float64(s.Memory.RSS) }

func (r *startupRow) readyRange() string {
	lo, hi := r.samples[0].Ready, r.samples[0].Ready
	for _, s := range r.samples {
		lo, hi = min(lo, s.Ready), max(hi, s.Ready)
	}
	return harness.FmtDur(float64(lo)) + " – " + harness.FmtDur(float64(hi))
}

// ---------------------------------------------------------------- report

func rate(s sample) float64  { return s.rate }
func goCPU(s sample) float64 { return float64(s.goCPU) }
func pyCPU(s sample) float64 { return float64(s.pyCPU) }
func p50(s sample) float64   { return float64(s.p50) }
func p99(s sample) float64   { return float64(s.p99) }

// median is the median over the rounds of f.
func median(ss []sample, f func(sample) float64) float64 {
	xs := make([]float64, len(ss))
	for i, s := range ss {
		xs[i] = f(s)
	}
	return harness.Median(xs)
}

// ratio is the median over rounds of a/b, each round's sample of path a
// divided by the same round's sample of path b; ok is false when b did not
// run in the cell.
func ratio(c *cell, a, b int, f func(sample) float64) (float64, bool) {
	if len(c.rounds[a]) == 0 || len(c.rounds[b]) == 0 {
		return 0, false
	}
	xs := make([]float64, len(c.rounds[a]))
	for i, s := range c.rounds[a] {
		xs[i] = f(s) / f(c.rounds[b][i])
	}
	return harness.Median(xs), true
}

func fmtRatio(c *cell, a, b int, f func(sample) float64) string {
	r, ok := ratio(c, a, b, f)
	if !ok {
		return "—"
	}
	return fmt.Sprintf("%.2f", r)
}

// spread is (max-min)/median of the rounds' throughput, in percent.
func spread(ss []sample) string {
	if len(ss) == 0 {
		return "—"
	}
	lo, hi := ss[0].rate, ss[0].rate
	for _, s := range ss {
		lo, hi = min(lo, s.rate), max(hi, s.rate)
	}
	return fmt.Sprintf("%.0f%%", 100*(hi-lo)/median(ss, rate))
}

// perPath formats f's median for every path of c, "—" where it did not run.
func perPath(c *cell, f func([]sample) string) []string {
	out := make([]string, nPaths)
	for id := range nPaths {
		if len(c.rounds[id]) == 0 {
			out[id] = "—"
		} else {
			out[id] = f(c.rounds[id])
		}
	}
	return out
}

func medianAs(fmtf func(float64) string, f func(sample) float64) func([]sample) string {
	return func(ss []sample) string { return fmtf(median(ss, f)) }
}

func report(w io.Writer, env *harness.Env, o options, cells []*cell, st *startupReport, took time.Duration, loadBefore string) {
	fmt.Fprintln(w, "# snakepit call benchmark: Runtime.Call (native, gRPC) vs raw gRPC vs the floor")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "- command: `%s`\n", command())
	fmt.Fprintf(w, "- settings: %d rounds × %s per cell and path, %s warm-up per cell and path; %d starts per process kind, memory read after %s idle; took %s\n",
		o.rounds, o.duration, o.warmup, o.starts, o.idle, took.Round(time.Second))
	fmt.Fprintf(w, "- machine: %s, %d cores (GOMAXPROCS %d), %s/%s, Linux %s\n",
		harness.CPUModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, harness.Kernel())
	fmt.Fprintf(w, "- 1-minute load average before / after the run (after includes the run itself): %s / %s\n",
		loadBefore, harness.LoadAvg())
	fmt.Fprintf(w, "- software: %s; Python %s (%s) for every worker and floor server; grpcio %s; protobuf %s\n",
		runtime.Version(), env.Interpreter.Version, env.Interpreter.Path, env.GRPCVersion, env.PBVersion)
	fmt.Fprintln(w, "- workers: echo_tools adapter, \"process\" profile: capacity 1, so one call runs at a time per worker process")
	fmt.Fprintln(w, "- native / gRPC: `Runtime.Call` on a pool of N workers with `Transport: \"native\"` / `\"grpc\"`")
	fmt.Fprintln(w, "- raw gRPC: `Execute` from a plain gRPC client straight to N workers started by `pyworker.Launch`;"+
		" caller g always uses worker g mod N, with no limit on calls in flight")
	fmt.Fprintln(w, "- raw-capped: raw gRPC, but at most one call in flight per worker (a free list of workers, as the pool admits calls);"+
		" only where callers > N")
	fmt.Fprintln(w, "- floor socket / floor pipe: N minimal stdlib Python echo servers (bench/floor: one thread, blocking reads,"+
		" each frame answered with its body) over a Unix socket / over the server's stdin and stdout; the bare payload,"+
		" no call metadata; one connection per server multiplexed as the native transport's, caller g on server g mod N,"+
		" no limit on frames in flight")
	fmt.Fprintln(w, "- floor-capped: floor socket, but at most one frame in flight per server (a free list, as raw-capped); only where callers > N")
	pipe := "the system's default (64 KiB on Linux)"
	if o.pipeSize != 0 {
		pipe = fmt.Sprintf("%d bytes (F_SETPIPE_SZ)", o.pipeSize)
	}
	fmt.Fprintf(w, "- floor pipe buffers: %s\n", pipe)
	fmt.Fprintln(w, "- figures are medians over the rounds; ratios are medians of per-round a/b ratios"+
		" (the paths' rounds are interleaved); p50/p99 are exact nearest-rank percentiles of every call of a round;"+
		" spread is (max−min)/median of calls/s over the rounds")

	row := func(c *cell, cols []string) {
		fmt.Fprintf(w, "| %s | %d | %d | %s |\n", c.payload.Name, c.shape.callers, c.shape.workers, strings.Join(cols, " | "))
	}
	pathHeader := "| payload | callers | N | " + strings.Join(pathNames[:], " | ") + " |"
	pathRule := "|---|--:|--:|" + strings.Repeat("--:|", nPaths)
	table := func(title string, f func([]sample) string) {
		fmt.Fprintln(w)
		fmt.Fprintln(w, title)
		fmt.Fprintln(w)
		fmt.Fprintln(w, pathHeader)
		fmt.Fprintln(w, pathRule)
		for _, c := range cells {
			row(c, perPath(c, f))
		}
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "## Calls")
	table("Throughput (calls/s):", medianAs(harness.FmtRate, rate))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Throughput ratios (< 1 means the first is slower):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| payload | callers | N | native / floor socket (goal ≥ 0.5) | native / floor-capped | native / gRPC | native / raw gRPC | gRPC / raw gRPC | gRPC / raw-capped | floor pipe / floor socket |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, c := range cells {
		row(c, []string{fmtRatio(c, nativePath, floorSocketPath, rate), fmtRatio(c, nativePath, floorCappedPath, rate),
			fmtRatio(c, nativePath, grpcPath, rate),
			fmtRatio(c, nativePath, rawPath, rate), fmtRatio(c, grpcPath, rawPath, rate),
			fmtRatio(c, grpcPath, cappedPath, rate), fmtRatio(c, floorPipePath, floorSocketPath, rate)})
	}
	table("Spread of throughput over the rounds:", spread)
	table("Latency p50:", medianAs(harness.FmtDur, p50))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Latency p50 ratios (> 1 means the first is slower):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| payload | callers | N | native / floor socket (goal ≤ 2) | native / floor-capped | native / gRPC | native / raw gRPC | gRPC / raw gRPC | gRPC / raw-capped | floor pipe / floor socket |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, c := range cells {
		row(c, []string{fmtRatio(c, nativePath, floorSocketPath, p50), fmtRatio(c, nativePath, floorCappedPath, p50),
			fmtRatio(c, nativePath, grpcPath, p50),
			fmtRatio(c, nativePath, rawPath, p50), fmtRatio(c, grpcPath, rawPath, p50),
			fmtRatio(c, grpcPath, cappedPath, p50), fmtRatio(c, floorPipePath, floorSocketPath, p50)})
	}
	table("Latency p99:", medianAs(harness.FmtDur, p99))
	table("Go CPU time per call (user+system of this whole process, which runs every client and the runtime):", medianAs(harness.FmtDur, goCPU))
	table("Python CPU time per call (user+system of the path's N Python processes, 10 ms resolution):", medianAs(harness.FmtDur, pyCPU))

	fewest, at := -1, ""
	for _, c := range cells {
		for id, ss := range c.rounds {
			for _, s := range ss {
				if fewest < 0 || s.calls < fewest {
					fewest, at = s.calls, c.name()+", "+pathNames[id]
				}
			}
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Fewest calls in one measured round: %d (%s).\n", fewest, at)

	if st != nil {
		reportStartup(w, o, st)
	}
	reportGoals(w, cells, st)
}

func reportStartup(w io.Writer, o options, st *startupReport) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "## Start-up and memory")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "One process at a time, %d starts of each kind (interleaved, after one unmeasured start of each), medians."+
		" Baselines: `python -c \"import time; print('ready', flush=True); time.sleep(60)\"` (bare), the same after"+
		" `import snakepit` (the package every adapter imports) and after `import echo_tools` (the adapter: snakepit, asyncio,"+
		" logging), with the worker's PYTHONPATH."+
		" ready: for a worker, the duration of `pyworker.Launch` (spawn, READY line, connect, first health check);"+
		" for a baseline, spawn until its `ready` line is read. Memory from /proc/PID/smaps_rollup after %s idle once ready;"+
		" USS = Private_Clean + Private_Dirty. Ratios are ratios of the medians.\n", o.starts, o.idle)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| Python | process | ready | ready min – max | PSS | USS | RSS | PSS / bare PSS (goal ≤ 1.5) | RSS / bare RSS | PSS / bare + imports PSS | ready / bare + imports ready (goal ≤ 1.5) |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range st.rows {
		ratios := []string{"—", "—", "—", "—"}
		if r.bare != nil {
			ratios = []string{
				fmt.Sprintf("%.2f", r.median(pssOf)/r.bare.median(pssOf)),
				fmt.Sprintf("%.2f", r.median(rssOf)/r.bare.median(rssOf)),
				fmt.Sprintf("%.2f", r.median(pssOf)/r.imports.median(pssOf)),
				fmt.Sprintf("%.2f", r.median(readyOf)/r.imports.median(readyOf)),
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.python, r.process,
			harness.FmtDur(r.median(readyOf)), r.readyRange(), harness.FmtMiB(r.median(pssOf)), harness.FmtMiB(r.median(ussOf)), harness.FmtMiB(r.median(rssOf)),
			strings.Join(ratios, " | "))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Interpreters: %s.\n", strings.Join(st.pythons, "; "))
	if st.ftNote != "" {
		fmt.Fprintln(w)
		fmt.Fprintf(w, "Free-threaded rows skipped: %s.\n", st.ftNote)
	}
}

// reportGoals lists the project's goals next to what this run measured.
func reportGoals(w io.Writer, cells []*cell, st *startupReport) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "## Goals")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| goal | where | measured | met |")
	fmt.Fprintln(w, "|---|---|--:|---|")
	// Judged on the value as printed, so that "1.50" never reads as a miss of ≤ 1.5.
	round := func(x float64) float64 { return math.Round(x*100) / 100 }
	met := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "no"
	}
	if st != nil {
		for _, r := range st.rows {
			if r.bare == nil {
				continue
			}
			x := r.median(pssOf) / r.bare.median(pssOf)
			fmt.Fprintf(w, "| worker PSS / bare PSS ≤ 1.5 | %s, %s | %.2f | %s |\n", r.python, r.process, x, met(round(x) <= 1.5))
		}
		for _, r := range st.rows {
			if r.bare == nil {
				continue
			}
			x := r.median(readyOf) / r.imports.median(readyOf)
			fmt.Fprintf(w, "| ready / (bare start + adapter imports) ≤ 1.5 | %s, %s | %.2f | %s |\n", r.python, r.process, x, met(round(x) <= 1.5))
		}
	}
	for _, c := range cells {
		if x, ok := ratio(c, nativePath, floorSocketPath, p50); ok {
			fmt.Fprintf(w, "| native p50 / floor p50 ≤ 2 | %s | %.2f | %s |\n", c.name(), x, met(round(x) <= 2))
		}
	}
	for _, c := range cells {
		if x, ok := ratio(c, nativePath, floorSocketPath, rate); ok {
			fmt.Fprintf(w, "| native throughput / floor throughput ≥ 0.5 | %s | %.2f | %s |\n", c.name(), x, met(round(x) >= 0.5))
		}
	}
}

func command() string {
	args := append([]string{"go", "run", "./bench/callbench"}, os.Args[1:]...)
	return strings.Join(args, " ")
}
