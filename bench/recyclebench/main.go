// Command recyclebench measures what a rolling restart costs a pool under
// load: throughput and latency while Runtime.RecycleAll replaces every worker
// (a replacement ready first, the old worker drained), against the same pool
// in steady state, in one run on one machine. Steady and rolling windows
// alternate; each steady window lasts as long as the rolling window before
// it. It prints a markdown report to stdout (progress goes to stderr). See
// docs/benchmarks.md.
//
//	go run ./bench/recyclebench [-workers 4] [-callers 16] [-rounds 5] [-steady 2s]
//	    [-transport native] [-max-concurrent 1] [-python PATH]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/bench/harness"
)

type options struct {
	workers, callers, rounds, maxConcurrent int
	steady                                  time.Duration
	transport, python                       string
}

func main() {
	var o options
	flag.IntVar(&o.workers, "workers", 4, "workers in the pool")
	flag.IntVar(&o.callers, "callers", 16, "concurrent callers")
	flag.IntVar(&o.rounds, "rounds", 5, "steady/rolling window pairs; the report gives medians")
	flag.IntVar(&o.maxConcurrent, "max-concurrent", 1, "RecyclePolicy.MaxConcurrent: workers replaced at once")
	flag.DurationVar(&o.steady, "steady", 2*time.Second, "the first steady window (later ones match the rolling window before)")
	flag.StringVar(&o.transport, "transport", "native", "native or grpc")
	flag.StringVar(&o.python, "python", "", "the interpreter (default: found as the runtime finds it)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "recyclebench:", err)
		os.Exit(1)
	}
}

// sample is one finished call.
type sample struct {
	start time.Time
	lat   time.Duration
	err   bool
}

// window is one measured phase.
type window struct {
	rolling    bool
	start, end time.Time
}

func run(o options) error {
	ctx := context.Background()
	rt, err := snakepit.Start(ctx, snakepit.Config{
		Logger: hclog.New(&hclog.LoggerOptions{Name: "recyclebench", Level: hclog.Warn, Output: os.Stderr}),
		Pools: []snakepit.PoolConfig{{Name: "p", Adapter: "echo_tools", Size: o.workers, Transport: o.transport,
			Python: o.python, PythonPath: []string{harness.DefaultAdapterDir()},
			Recycle: snakepit.RecyclePolicy{MaxConcurrent: o.maxConcurrent}}},
	})
	if err != nil {
		return err
	}
	defer rt.Stop(ctx)
	stop := load(rt, o.callers)
	time.Sleep(500 * time.Millisecond) // warm-up, not measured
	var windows []window
	steady := o.steady
	for r := 0; r < o.rounds; r++ {
		w := window{start: time.Now()}
		time.Sleep(steady)
		w.end = time.Now()
		windows = append(windows, w)
		w = window{rolling: true, start: time.Now()}
		if err := rt.RecycleAll(ctx, "p"); err != nil {
			stop()
			return err
		}
		w.end = time.Now()
		windows = append(windows, w)
		steady = w.end.Sub(w.start)
		fmt.Fprintf(os.Stderr, "round %d/%d: rolling restart of %d workers took %s\n", r+1, o.rounds, o.workers, steady.Round(time.Millisecond))
	}
	all := stop()
	h, err := rt.Health(ctx)
	if err != nil {
		return err
	}
	report(o, windows, all, h[0])
	return nil
}

// load runs callers that call echo back to back; stop ends them and returns
// every sample.
func load(rt *snakepit.Runtime, callers int) func() []sample {
	per := make([][]sample, callers)
	var done atomic.Bool
	var wg sync.WaitGroup
	payload := map[string]any{"value": "x"}
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !done.Load() {
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := rt.Call(ctx, "p", "echo", payload)
				cancel()
				per[g] = append(per[g], sample{start: t0, lat: time.Since(t0), err: err != nil})
			}
		}()
	}
	return func() []sample {
		done.Store(true)
		wg.Wait()
		return slices.Concat(per...)
	}
}

// phase sums the calls that started within a window.
type phase struct {
	rate     float64
	p50, p99 time.Duration
	max      time.Duration
	calls    int
	failed   int
}

func measure(w window, all []sample) phase {
	var lats []time.Duration
	ph := phase{}
	for _, s := range all {
		if s.start.Before(w.start) || !s.start.Before(w.end) {
			continue
		}
		ph.calls++
		if s.err {
			ph.failed++
			continue
		}
		lats = append(lats, s.lat)
	}
	slices.Sort(lats)
	ph.rate = float64(ph.calls) / w.end.Sub(w.start).Seconds()
	ph.p50, ph.p99 = harness.Quantile(lats, 0.5), harness.Quantile(lats, 0.99)
	if len(lats) > 0 {
		ph.max = lats[len(lats)-1]
	}
	return ph
}

func report(o options, windows []window, all []sample, h snakepit.PoolHealth) {
	var steady, rolling []phase
	var durations []float64
	for _, w := range windows {
		if w.rolling {
			rolling = append(rolling, measure(w, all))
			durations = append(durations, float64(w.end.Sub(w.start)))
		} else {
			steady = append(steady, measure(w, all))
		}
	}
	fmt.Printf("# Rolling restart under load\n\n")
	fmt.Printf("- command: `go run ./bench/recyclebench -workers %d -callers %d -rounds %d -transport %s -max-concurrent %d`\n",
		o.workers, o.callers, o.rounds, o.transport, o.maxConcurrent)
	fmt.Printf("- machine: %s, %d CPUs (GOMAXPROCS %d), kernel %s\n", harness.CPUModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), harness.Kernel())
	fmt.Printf("- pool: %d workers of `echo_tools` (%s), %d callers calling `echo` back to back; %d rolling restarts (RecycleAll), each replacing every worker %d at a time; median rolling restart %s\n",
		o.workers, h.Profile, o.callers, o.rounds, o.maxConcurrent, time.Duration(harness.Median(durations)).Round(time.Millisecond))
	fmt.Printf("- recycles recorded: %v\n\n", h.Recycles)
	fmt.Printf("| window | calls/s | p50 | p99 | max | failed calls |\n|---|---|---|---|---|---|\n")
	s, r := summarize(steady), summarize(rolling)
	row := func(name string, p phase) {
		fmt.Printf("| %s | %s | %s | %s | %s | %d of %d |\n", name, harness.FmtRate(p.rate), harness.FmtDur(float64(p.p50)),
			harness.FmtDur(float64(p.p99)), harness.FmtDur(float64(p.max)), p.failed, p.calls)
	}
	row("steady state", s)
	row("during a rolling restart", r)
	fmt.Printf("\nRolling / steady: throughput %.2f×, p99 %.2f× (medians over %d rounds; failed calls summed).\n",
		r.rate/s.rate, float64(r.p99)/float64(s.p99), o.rounds)
}

// summarize takes the median rate and latencies over rounds and sums calls
// and failures.
func summarize(ps []phase) phase {
	var rates, p50s, p99s []float64
	out := phase{}
	for _, p := range ps {
		rates = append(rates, p.rate)
		p50s = append(p50s, float64(p.p50))
		p99s = append(p99s, float64(p.p99))
		out.max = max(out.max, p.max)
		out.calls += p.calls
		out.failed += p.failed
	}
	out.rate = harness.Median(rates)
	out.p50, out.p99 = time.Duration(harness.Median(p50s)), time.Duration(harness.Median(p99s))
	return out
}
