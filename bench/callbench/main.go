// Command callbench compares snakepit.Runtime.Call with raw gRPC calls to the
// same kind of Python worker, in one run on one machine, and prints a
// markdown report to stdout (progress goes to stderr). See
// docs/benchmarks.md.
//
//	go run ./bench/callbench [-rounds 5] [-duration 1s] [-warmup 500ms] [-payloads 100B,1MiB]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
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
	flag.IntVar(&o.rounds, "rounds", 5, "measured rounds per cell and path; the report gives the median of the rounds")
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
	rate     float64
	p50, p99 time.Duration
	calls    int
}

// cell is one payload × shape, with every round of both paths.
type cell struct {
	payload harness.Payload
	shape   shape
	rt, raw []sample
}

func run(o options) error {
	ctx := context.Background()
	began := time.Now()
	maxWorkers := 0
	sizes := map[int]bool{}
	var poolSizes []int
	for _, s := range shapes {
		maxWorkers = max(maxWorkers, s.workers)
		if !sizes[s.workers] {
			sizes[s.workers] = true
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
			fmt.Fprintf(os.Stderr, "callbench: cell %d/%d: %s, %d callers, %d worker(s)\n",
				len(cells)+1, total, p.Name, s.callers, s.workers)
			if err := measureCell(ctx, env, o, c); err != nil {
				return fmt.Errorf("%s, %d callers, %d worker(s): %w", p.Name, s.callers, s.workers, err)
			}
			cells = append(cells, c)
		}
	}
	report(os.Stdout, env, o, cells, time.Since(began))
	return nil
}

// measureCell warms both paths up, then runs o.rounds rounds of each,
// interleaved (runtime first in even rounds, raw first in odd ones) so that
// drift on the machine hits both alike.
func measureCell(ctx context.Context, env *harness.Env, o options, c *cell) error {
	paths := []struct {
		call harness.Call
		out  *[]sample
	}{
		{env.RuntimeCall(harness.PoolName(c.shape.workers), c.payload), &c.rt},
		{env.RawCall(c.shape.workers, c.payload), &c.raw},
	}
	if o.warmup > 0 {
		for _, p := range paths {
			if _, err := harness.Measure(ctx, p.call, c.shape.callers, o.warmup); err != nil {
				return err
			}
		}
	}
	for r := 0; r < o.rounds; r++ {
		for i := range paths {
			p := paths[(i+r)%2]
			runtime.GC() // no garbage of the previous run is collected during this one
			m, err := harness.Measure(ctx, p.call, c.shape.callers, o.duration)
			if err != nil {
				return err
			}
			*p.out = append(*p.out, sample{rate: m.Rate(), p50: m.Quantile(0.50), p99: m.Quantile(0.99), calls: m.Calls()})
		}
	}
	return nil
}

func median(ss []sample, f func(sample) float64) float64 {
	xs := make([]float64, len(ss))
	for i, s := range ss {
		xs[i] = f(s)
	}
	return harness.Median(xs)
}

// pairedRatio is the median over rounds of runtime/raw, each round's
// runtime sample divided by the same round's raw sample.
func pairedRatio(c *cell, f func(sample) float64) float64 {
	xs := make([]float64, len(c.rt))
	for i := range c.rt {
		xs[i] = f(c.rt[i]) / f(c.raw[i])
	}
	return harness.Median(xs)
}

// spread is (max-min)/median of the rounds' throughput, in percent.
func spread(ss []sample) float64 {
	lo, hi := ss[0].rate, ss[0].rate
	for _, s := range ss {
		lo, hi = min(lo, s.rate), max(hi, s.rate)
	}
	return 100 * (hi - lo) / median(ss, func(s sample) float64 { return s.rate })
}

func rate(s sample) float64 { return s.rate }
func p50(s sample) float64  { return float64(s.p50) }
func p99(s sample) float64  { return float64(s.p99) }

func report(w io.Writer, env *harness.Env, o options, cells []*cell, took time.Duration) {
	fmt.Fprintln(w, "# snakepit call benchmark: Runtime.Call vs raw gRPC")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "- command: `%s`\n", command())
	fmt.Fprintf(w, "- settings: %d rounds × %s per cell and path, %s warm-up per cell and path; took %s\n",
		o.rounds, o.duration, o.warmup, took.Round(time.Second))
	fmt.Fprintf(w, "- machine: %s, %d cores (GOMAXPROCS %d), %s/%s, Linux %s\n",
		cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, kernel())
	fmt.Fprintf(w, "- software: %s; Python %s (%s); grpcio %s; protobuf %s\n",
		runtime.Version(), env.Interpreter.Version, env.Interpreter.Path, env.GRPCVersion, env.PBVersion)
	fmt.Fprintln(w, "- workers: echo_tools adapter, \"process\" profile (capacity 1 per worker process)")
	fmt.Fprintln(w, "- runtime: `Runtime.Call` on a pool of N workers; raw: `Execute` over a plain gRPC client on N workers"+
		" started by `pyworker.Launch`, caller g pinned to raw worker g mod N")
	fmt.Fprintln(w, "- every figure is the median of the rounds; ratios are medians of per-round runtime/raw ratios"+
		" (runtime and raw rounds interleaved); p50/p99 are exact nearest-rank percentiles of every call in the round;"+
		" spread is (max−min)/median of calls/s over the rounds")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| payload | callers | workers (N) | runtime calls/s | raw calls/s | calls/s ratio | runtime p50 | raw p50 | p50 ratio | runtime p99 | raw p99 | spread runtime / raw |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	fewest, fewestAt := -1, ""
	for _, c := range cells {
		fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %.2f | %s | %s | %.2f | %s | %s | %.0f%% / %.0f%% |\n",
			c.payload.Name, c.shape.callers, c.shape.workers,
			fmtRate(median(c.rt, rate)), fmtRate(median(c.raw, rate)), pairedRatio(c, rate),
			fmtDur(median(c.rt, p50)), fmtDur(median(c.raw, p50)), pairedRatio(c, p50),
			fmtDur(median(c.rt, p99)), fmtDur(median(c.raw, p99)),
			spread(c.rt), spread(c.raw))
		for _, ss := range [][]sample{c.rt, c.raw} {
			for _, s := range ss {
				if fewest < 0 || s.calls < fewest {
					fewest = s.calls
					fewestAt = fmt.Sprintf("%s, %d callers, %d worker(s)", c.payload.Name, c.shape.callers, c.shape.workers)
				}
			}
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Fewest calls in one measured round: %d (%s).\n", fewest, fewestAt)
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
