// Command callbench compares snakepit.Runtime.Call with raw gRPC calls to the
// same kind of Python worker, in one run on one machine, and prints a
// markdown report to stdout (progress goes to stderr). See
// docs/benchmarks.md.
//
//	go run ./bench/callbench [-rounds 7] [-duration 1s] [-warmup 500ms] [-payloads 100B,1MiB]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/snakepit-go/snakepit/bench/harness"
)

// shape is one concurrency/capacity combination. The runtime side uses a
// pool of `workers` processes; the raw side uses `workers` raw processes, with
// caller g pinned to raw worker g mod workers.
type shape struct {
	callers, workers int
}

var shapes = []shape{{1, 1}, {16, 1}, {16, 2}}

type options struct {
	rounds   int
	duration time.Duration
	warmup   time.Duration
	payloads []harness.Payload
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 7, "measured rounds per cell and path; the report gives the median of the rounds")
	flag.DurationVar(&o.duration, "duration", time.Second, "length of one measured round")
	flag.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unmeasured calls per cell and path before its rounds")
	payloads := flag.String("payloads", "100B,1MiB", "comma-separated payloads to run (100B, 1MiB)")
	flag.Parse()
	for _, name := range strings.Split(*payloads, ",") {
		p, ok := harness.Payloads[strings.TrimSpace(name)]
		if !ok {
			fmt.Fprintf(os.Stderr, "callbench: unknown payload %q (known: 100B, 1MiB)\n", name)
			os.Exit(2)
		}
		o.payloads = append(o.payloads, p)
	}
	if o.rounds < 1 || o.duration <= 0 || o.warmup < 0 {
		fmt.Fprintln(os.Stderr, "callbench: -rounds must be ≥ 1, -duration > 0, -warmup ≥ 0")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "callbench:", err)
		os.Exit(1)
	}
}

// sample is one path's numbers in one round.
type sample struct {
	rate         float64
	p50, p99     time.Duration
	calls        int
	goCPU, pyCPU time.Duration // CPU time per call: this Go process, the path's Python workers
}

// The paths compared. cappedPath runs only where callers outnumber workers:
// elsewhere its cap never binds and it is the raw path.
const (
	rtPath = iota
	rawPath
	cappedPath
	nPaths
)

var pathNames = [nPaths]string{"runtime", "raw", "raw-capped"}

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
	began, loadBefore := time.Now(), loadAvg()
	maxWorkers := 0
	var poolSizes []int
	for _, s := range shapes {
		maxWorkers = max(maxWorkers, s.workers)
		if !slices.Contains(poolSizes, s.workers) {
			poolSizes = append(poolSizes, s.workers)
		}
	}
	fmt.Fprintln(os.Stderr, "callbench: starting the runtime and the raw workers")
	env, err := harness.Start(ctx, harness.Options{PoolSizes: poolSizes, RawWorkers: maxWorkers})
	if err != nil {
		return err
	}
	defer env.Close()

	var cells []*cell
	total := len(o.payloads) * len(shapes)
	for _, p := range o.payloads {
		for _, s := range shapes {
			c := &cell{payload: p, shape: s}
			fmt.Fprintf(os.Stderr, "callbench: cell %d/%d: %s\n", len(cells)+1, total, c.name())
			if err := measureCell(ctx, env, o, c); err != nil {
				return fmt.Errorf("%s: %w", c.name(), err)
			}
			cells = append(cells, c)
		}
	}
	report(os.Stdout, env, o, cells, time.Since(began), loadBefore)
	return nil
}

// measureCell warms every path up, then runs o.rounds rounds of each,
// interleaved: round r starts with path r mod (number of paths) and goes on in
// order, so drift on the machine hits every path alike.
func measureCell(ctx context.Context, env *harness.Env, o options, c *cell) error {
	type path struct {
		id   int
		call harness.Call
		pids []int // the Python workers it calls
	}
	pool := harness.PoolName(c.shape.workers)
	rtPids, err := env.RuntimePids(ctx, pool)
	if err != nil {
		return err
	}
	rawPids := env.RawPids(c.shape.workers)
	paths := []path{
		{rtPath, env.RuntimeCall(pool, c.payload), rtPids},
		{rawPath, env.RawCall(c.shape.workers, c.payload), rawPids},
	}
	if c.capped() {
		paths = append(paths, path{cappedPath, env.RawCappedCall(c.shape.workers, c.payload), rawPids})
	}
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
			n := time.Duration(max(m.Calls(), 1))
			c.rounds[p.id] = append(c.rounds[p.id], sample{rate: m.Rate(), p50: m.Quantile(0.50), p99: m.Quantile(0.99),
				calls: m.Calls(), goCPU: (go1 - go0) / n, pyCPU: (py1 - py0) / n})
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

// ratio is the median over rounds of runtime/other, each round's runtime
// sample divided by the same round's sample of the other path.
func ratio(c *cell, other int, f func(sample) float64) float64 {
	xs := make([]float64, len(c.rounds[rtPath]))
	for i, s := range c.rounds[rtPath] {
		xs[i] = f(s) / f(c.rounds[other][i])
	}
	return harness.Median(xs)
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

func report(w io.Writer, env *harness.Env, o options, cells []*cell, took time.Duration, loadBefore string) {
	fmt.Fprintln(w, "# snakepit call benchmark: Runtime.Call vs raw gRPC")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "- command: `%s`\n", command())
	fmt.Fprintf(w, "- settings: %d rounds × %s per cell and path, %s warm-up per cell and path; took %s\n",
		o.rounds, o.duration, o.warmup, took.Round(time.Second))
	fmt.Fprintf(w, "- machine: %s, %d cores (GOMAXPROCS %d), %s/%s, Linux %s\n",
		cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, kernel())
	fmt.Fprintf(w, "- 1-minute load average before / after the run (after includes the run itself): %s / %s\n",
		loadBefore, loadAvg())
	fmt.Fprintf(w, "- software: %s; Python %s (%s); grpcio %s; protobuf %s\n",
		runtime.Version(), env.Interpreter.Version, env.Interpreter.Path, env.GRPCVersion, env.PBVersion)
	fmt.Fprintln(w, "- workers: echo_tools adapter, \"process\" profile: capacity 1, so one call runs at a time per worker process")
	fmt.Fprintln(w, "- runtime: `Runtime.Call` on a pool of N workers")
	fmt.Fprintln(w, "- raw: `Execute` from a plain gRPC client straight to N workers started by `pyworker.Launch`;"+
		" caller g always uses worker g mod N, with no limit on calls in flight")
	fmt.Fprintln(w, "- raw-capped: raw, but at most one call in flight per worker (a free list of workers, as the pool admits calls);"+
		" only where callers > N")
	fmt.Fprintln(w, "- figures are medians over the rounds; ratios are medians of per-round runtime/other ratios"+
		" (the paths' rounds are interleaved); p50/p99 are exact nearest-rank percentiles of every call of a round;"+
		" spread is (max−min)/median of calls/s over the rounds")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Throughput (calls/s; ratio = runtime/other, < 1 means the runtime is slower):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| payload | callers | N | runtime | raw | ratio vs raw | raw-capped | ratio vs raw-capped | spread runtime / raw / raw-capped |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, c := range cells {
		capped, capRatio := "—", "—"
		if c.capped() {
			capped, capRatio = fmtRate(median(c.rounds[cappedPath], rate)), fmt.Sprintf("%.2f", ratio(c, cappedPath, rate))
		}
		fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %.2f | %s | %s | %s / %s / %s |\n",
			c.payload.Name, c.shape.callers, c.shape.workers,
			fmtRate(median(c.rounds[rtPath], rate)), fmtRate(median(c.rounds[rawPath], rate)), ratio(c, rawPath, rate),
			capped, capRatio,
			spread(c.rounds[rtPath]), spread(c.rounds[rawPath]), spread(c.rounds[cappedPath]))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Latency per call (ratio = runtime/other p50, > 1 means the runtime is slower):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| payload | callers | N | runtime p50 | raw p50 | ratio vs raw | raw-capped p50 | ratio vs raw-capped | runtime p99 | raw p99 | raw-capped p99 |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, c := range cells {
		capped, capRatio, capped99 := "—", "—", "—"
		if c.capped() {
			capped, capRatio = fmtDur(median(c.rounds[cappedPath], p50)), fmt.Sprintf("%.2f", ratio(c, cappedPath, p50))
			capped99 = fmtDur(median(c.rounds[cappedPath], p99))
		}
		fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %.2f | %s | %s | %s | %s | %s |\n",
			c.payload.Name, c.shape.callers, c.shape.workers,
			fmtDur(median(c.rounds[rtPath], p50)), fmtDur(median(c.rounds[rawPath], p50)), ratio(c, rawPath, p50),
			capped, capRatio,
			fmtDur(median(c.rounds[rtPath], p99)), fmtDur(median(c.rounds[rawPath], p99)), capped99)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "CPU time per call (user+system, medians over the rounds; Go = this whole process, Python = the path's N workers):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| payload | callers | N | runtime Go | raw Go | raw-capped Go | runtime Python | raw Python | raw-capped Python |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, c := range cells {
		cappedGo, cappedPy := "—", "—"
		if c.capped() {
			cappedGo, cappedPy = fmtDur(median(c.rounds[cappedPath], goCPU)), fmtDur(median(c.rounds[cappedPath], pyCPU))
		}
		fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %s | %s | %s | %s |\n",
			c.payload.Name, c.shape.callers, c.shape.workers,
			fmtDur(median(c.rounds[rtPath], goCPU)), fmtDur(median(c.rounds[rawPath], goCPU)), cappedGo,
			fmtDur(median(c.rounds[rtPath], pyCPU)), fmtDur(median(c.rounds[rawPath], pyCPU)), cappedPy)
	}
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
}

func command() string {
	args := append([]string{"go", "run", "./bench/callbench"}, os.Args[1:]...)
	return strings.Join(args, " ")
}

func fmtRate(r float64) string {
	if r >= 100 {
		return fmt.Sprintf("%.0f", r)
	}
	return fmt.Sprintf("%.1f", r)
}

func fmtDur(ns float64) string {
	d := time.Duration(ns)
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", ns/1e3)
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	default:
		return fmt.Sprintf("%.0f ms", ns/1e6)
	}
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}
