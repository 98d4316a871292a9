// Command streambench measures streams, callbacks and sessions against plain
// calls of a trivial tool, on a pool of one worker ("process" profile) per
// transport (native, gRPC), in one run on one machine: items per second of a
// stream of small items (default window, Window(1), Window(256)) and of
// 64 KiB bytes items, the time to a stream's first item, what breaking out of
// a stream costs, callbacks per second and their round trip, and the routing
// overhead of a strict session. Every figure is compared with Runtime.Call of
// a trivial tool on the same pool, measured in the same rounds. It prints a
// markdown report to stdout (progress goes to stderr). See docs/benchmarks.md.
//
//	go run ./bench/streambench [-rounds 5] [-duration 400ms] [-warmup 150ms]
//	    [-transports native,grpc] [-k 100] [-block 65536] [-python PATH]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/bench/harness"
	"github.com/snakepit-go/snakepit/pyworker"
)

// adapter is the Python module every worker serves
// (testdata/pyadapters/stream_bench.py).
const adapter = "stream_bench"

// callbackName is the Go function the callbacks tool calls.
const callbackName = "bench_echo"

type options struct {
	rounds     int
	duration   time.Duration
	warmup     time.Duration
	transports []string
	k          int
	block      int
	python     string
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 5, "measured rounds per path; the report gives the median of the rounds")
	flag.DurationVar(&o.duration, "duration", 400*time.Millisecond, "length of one measured round of one path")
	flag.DurationVar(&o.warmup, "warmup", 150*time.Millisecond, "unmeasured run of every path before the rounds")
	transports := flag.String("transports", "native,grpc", "comma-separated transports, one pool of 1 worker each")
	flag.IntVar(&o.k, "k", 100, "callbacks made by one call of the callbacks tool")
	flag.IntVar(&o.block, "block", 64<<10, "size in bytes of one bytes item (and of the unary reply it is compared with)")
	flag.StringVar(&o.python, "python", "", "the workers' interpreter (default: the first Python with grpcio and protobuf, as the runtime finds it)")
	flag.Parse()
	for _, t := range strings.Split(*transports, ",") {
		t = strings.TrimSpace(t)
		if t != "native" && t != "grpc" {
			fmt.Fprintf(os.Stderr, "streambench: unknown transport %q (native, grpc)\n", t)
			os.Exit(2)
		}
		o.transports = append(o.transports, t)
	}
	if o.rounds < 1 || o.duration <= 0 || o.warmup < 0 || o.k < 1 || o.block < 1 {
		fmt.Fprintln(os.Stderr, "streambench: -rounds, -k and -block must be ≥ 1, -duration > 0, -warmup ≥ 0")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "streambench:", err)
		os.Exit(1)
	}
}

// The paths measured on every pool.
const (
	unaryPath       = iota // rt.Call(item): the baseline of every ratio
	streamW1Path           // ints with Window(1)
	streamPath             // ints with the default window
	streamW256Path         // ints with Window(256)
	unaryBlockPath         // rt.Call(block): one bytes item per call
	streamBlockPath        // blocks with the default window
	firstPath              // streams of first: time to the first item
	breakPath              // streams of ints, broken out of after the first item
	breakW1Path            // the same with Window(1)
	callbackPath           // rt.Call(callbacks): K callbacks per call
	sessionPath            // s.Call(item) on a strict session
	nPaths
)

var pathNames = [nPaths]string{
	"rt.Call(item)", "Stream(ints), Window(1)", fmt.Sprintf("Stream(ints), default window (%d)", snakepit.DefaultWindow),
	"Stream(ints), Window(256)", "rt.Call(block)", "Stream(blocks), default window", "Stream(first)",
	"Stream(ints) + break", "Stream(ints), Window(1) + break", "rt.Call(callbacks)", "Session.Call(item), strict",
}

// sample is one path's numbers in one round.
type sample struct {
	units        int           // calls, items, streams or callbacks
	elapsed      time.Duration // wall time the units took
	p50, p99     time.Duration // of lat
	max          time.Duration
	p50b, p99b   time.Duration // of the path's second latency, if it has one
	inner        time.Duration // callbacks: the Python loops' own time (sum of loop_ns)
	goCPU, pyCPU time.Duration // over the round
}

func (s sample) rate() float64 { return float64(s.units) / s.elapsed.Seconds() }

// pool is one transport's pool and every round of every path on it.
type pool struct {
	transport, name string
	pids            []int
	session         *snakepit.Session
	rounds          [nPaths][]sample
}

// bench holds what every path needs.
type bench struct {
	rt *snakepit.Runtime
	o  options
}

func run(o options) error {
	ctx := context.Background()
	began, loadBefore := time.Now(), harness.LoadAvg()
	var modules []string
	if slices.Contains(o.transports, "grpc") {
		modules = pyworker.GRPC{}.RequiredModules()
	}
	interp, err := pyworker.FindInterpreter(ctx, o.python, modules)
	if err != nil {
		return err
	}
	var cfgs []snakepit.PoolConfig
	var pools []*pool
	for _, t := range o.transports {
		p := &pool{transport: t, name: t}
		pools = append(pools, p)
		cfgs = append(cfgs, snakepit.PoolConfig{Name: p.name, Adapter: adapter, Size: 1, Transport: t,
			PythonPath: []string{harness.DefaultAdapterDir()}})
	}
	fmt.Fprintf(os.Stderr, "streambench: starting %d pools of 1 worker (%s)\n", len(pools), interp.Path)
	rt, err := snakepit.Start(ctx, snakepit.Config{Pools: cfgs, Python: interp.Path,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "streambench", Level: hclog.Warn, Output: os.Stderr})})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = rt.Stop(sctx)
	}()
	if err := rt.Register(callbackName, func(_ context.Context, a struct{ I int }) (int, error) { return a.I, nil }); err != nil {
		return err
	}
	b := &bench{rt: rt, o: o}
	for _, p := range pools {
		if p.pids, err = harness.PoolPids(ctx, rt, p.name); err != nil {
			return err
		}
		if p.session, err = rt.OpenSession(ctx, p.name, snakepit.SessionOptions{Mode: snakepit.SessionStrict}); err != nil {
			return err
		}
	}

	type job struct {
		p  *pool
		id int
	}
	var jobs []job
	for _, p := range pools {
		for id := range nPaths {
			jobs = append(jobs, job{p, id})
		}
	}
	if o.warmup > 0 {
		fmt.Fprintf(os.Stderr, "streambench: warm-up, %s per path\n", o.warmup)
		for _, j := range jobs {
			if _, err := b.measure(ctx, j.p, j.id, o.warmup); err != nil {
				return fmt.Errorf("%s, %s, warm-up: %w", j.p.transport, pathNames[j.id], err)
			}
		}
	}
	// Round r starts with job r mod (number of jobs) and goes on in order,
	// so drift on the machine hits every path alike.
	for r := 0; r < o.rounds; r++ {
		fmt.Fprintf(os.Stderr, "streambench: round %d/%d\n", r+1, o.rounds)
		for i := range jobs {
			j := jobs[(i+r)%len(jobs)]
			runtime.GC() // no garbage of the previous path is collected during this one
			go0 := harness.SelfCPU()
			py0, err := harness.ProcessCPU(j.p.pids)
			if err != nil {
				return err
			}
			s, err := b.measure(ctx, j.p, j.id, o.duration)
			if err != nil {
				return fmt.Errorf("%s, %s: %w", j.p.transport, pathNames[j.id], err)
			}
			py1, err := harness.ProcessCPU(j.p.pids)
			if err != nil {
				return err
			}
			s.goCPU, s.pyCPU = harness.SelfCPU()-go0, py1-py0
			j.p.rounds[j.id] = append(j.p.rounds[j.id], s)
		}
	}
	for _, p := range pools {
		pids, err := harness.PoolPids(ctx, rt, p.name)
		if err != nil {
			return err
		}
		if !slices.Equal(pids, p.pids) {
			return fmt.Errorf("pool %s: its worker was replaced during the run (pids %v, then %v)", p.name, p.pids, pids)
		}
		if err := p.session.Close(ctx); err != nil {
			return err
		}
	}
	report(os.Stdout, o, interp, pools, time.Since(began), loadBefore)
	return nil
}

// measure runs path id on p for about d.
func (b *bench) measure(ctx context.Context, p *pool, id int, d time.Duration) (sample, error) {
	switch id {
	case unaryPath:
		return b.unary(ctx, d, func(ctx context.Context, args any) (*snakepit.Result, error) {
			return b.rt.Call(ctx, p.name, "item", args)
		})
	case sessionPath:
		return b.unary(ctx, d, func(ctx context.Context, args any) (*snakepit.Result, error) {
			return p.session.Call(ctx, "item", args)
		})
	case streamW1Path:
		return b.items(ctx, p.name, d, snakepit.Window(1))
	case streamPath:
		return b.items(ctx, p.name, d)
	case streamW256Path:
		return b.items(ctx, p.name, d, snakepit.Window(256))
	case unaryBlockPath:
		return b.unaryBlock(ctx, p.name, d)
	case streamBlockPath:
		return b.blocks(ctx, p.name, d)
	case firstPath:
		return b.first(ctx, p.name, d)
	case breakPath:
		return b.breaks(ctx, p.name, d)
	case breakW1Path:
		return b.breaks(ctx, p.name, d, snakepit.Window(1))
	case callbackPath:
		return b.callbacks(ctx, p.name, d)
	}
	return sample{}, fmt.Errorf("no path %d", id)
}

// unary calls item(i) back to back and checks every answer.
func (b *bench) unary(ctx context.Context, d time.Duration, call func(context.Context, any) (*snakepit.Result, error)) (sample, error) {
	i := 0
	m, err := harness.Measure(ctx, func(ctx context.Context, _ int) error {
		i++
		res, err := call(ctx, map[string]any{"i": i})
		if err != nil {
			return err
		}
		var got int
		if err := res.Decode(&got); err != nil {
			return err
		}
		if got != i {
			return fmt.Errorf("item(%d) answered %d", i, got)
		}
		return nil
	}, 1, d)
	if err != nil {
		return sample{}, err
	}
	return fromRun(m), nil
}

// unaryBlock calls block(size) back to back and checks every answer's size.
func (b *bench) unaryBlock(ctx context.Context, pool string, d time.Duration) (sample, error) {
	args := map[string]any{"size": b.o.block}
	m, err := harness.Measure(ctx, func(ctx context.Context, _ int) error {
		res, err := b.rt.Call(ctx, pool, "block", args)
		if err != nil {
			return err
		}
		if data, raw := res.Bytes(); !raw || len(data) != b.o.block {
			return fmt.Errorf("block(%d) answered %d bytes (raw: %v)", b.o.block, len(data), raw)
		}
		return nil
	}, 1, d)
	if err != nil {
		return sample{}, err
	}
	return fromRun(m), nil
}

func fromRun(m harness.Run) sample {
	s := sample{units: m.Calls(), elapsed: m.Elapsed, p50: m.Quantile(0.5), p99: m.Quantile(0.99)}
	if n := len(m.Latencies); n > 0 {
		s.max = m.Latencies[n-1]
	}
	return s
}

// items consumes one stream of ints, checking every item, until d has
// passed; elapsed runs from the Stream call to the last item taken (the
// break that ends the loop is measured by breakPath, not here).
func (b *bench) items(ctx context.Context, pool string, d time.Duration, opts ...snakepit.CallOption) (sample, error) {
	return b.drain(ctx, pool, "ints", map[string]any{}, d, func(n int, chunk *snakepit.Result) error {
		var v int
		if err := chunk.Decode(&v); err != nil {
			return err
		}
		if v != n {
			return fmt.Errorf("item %d is %d", n, v)
		}
		return nil
	}, opts...)
}

// blocks is items for the stream of bytes items.
func (b *bench) blocks(ctx context.Context, pool string, d time.Duration) (sample, error) {
	return b.drain(ctx, pool, "blocks", map[string]any{"size": b.o.block}, d, func(n int, chunk *snakepit.Result) error {
		if data, raw := chunk.Bytes(); !raw || len(data) != b.o.block {
			return fmt.Errorf("item %d: %d bytes (raw: %v), want %d", n, len(data), raw, b.o.block)
		}
		return nil
	})
}

// drain takes the items of one endless stream of tool, each checked by
// check, until d has passed.
func (b *bench) drain(ctx context.Context, pool, tool string, args map[string]any, d time.Duration,
	check func(n int, chunk *snakepit.Result) error, opts ...snakepit.CallOption) (sample, error) {
	n := 0
	start := time.Now()
	end, last := start.Add(d), start
	for chunk, err := range b.rt.Stream(ctx, pool, tool, args, opts...) {
		if err != nil {
			return sample{}, err
		}
		if err := check(n, chunk); err != nil {
			return sample{}, err
		}
		n++
		if last = time.Now(); !last.Before(end) {
			break
		}
	}
	if last.Before(end) {
		return sample{}, errors.New("the endless stream ended")
	}
	return sample{units: n, elapsed: last.Sub(start)}, nil
}

// first runs streams of first (one item, yielded at once) back to back:
// lat is the time from the Stream call to the first item, the second
// latency the whole loop, to its end.
func (b *bench) first(ctx context.Context, pool string, d time.Duration) (sample, error) {
	var firsts, wholes []time.Duration
	start := time.Now()
	for end := start.Add(d); time.Now().Before(end); {
		t0 := time.Now()
		var ttfi time.Duration
		items := 0
		for chunk, err := range b.rt.Stream(ctx, pool, "first", map[string]any{}) {
			if err != nil {
				return sample{}, err
			}
			if items == 0 {
				ttfi = time.Since(t0)
			}
			var v int
			if err := chunk.Decode(&v); err != nil || v != 0 {
				return sample{}, fmt.Errorf("first yielded %s (%v)", chunk.JSON(), err)
			}
			items++
		}
		whole := time.Since(t0)
		if items != 1 {
			return sample{}, fmt.Errorf("first yielded %d items, want 1", items)
		}
		firsts, wholes = append(firsts, ttfi), append(wholes, whole)
	}
	s := latencies(firsts, time.Since(start))
	slices.Sort(wholes)
	s.p50b, s.p99b = harness.Quantile(wholes, 0.5), harness.Quantile(wholes, 0.99)
	return s, nil
}

// breaks opens streams of ints back to back, takes the first item and
// breaks: lat is the time from the break to the loop's end (Python closed
// the generator and acknowledged); the second latency is the whole stream.
func (b *bench) breaks(ctx context.Context, pool string, d time.Duration, opts ...snakepit.CallOption) (sample, error) {
	var brks, wholes []time.Duration
	start := time.Now()
	for end := start.Add(d); time.Now().Before(end); {
		t0 := time.Now()
		var tb time.Time
		for chunk, err := range b.rt.Stream(ctx, pool, "ints", map[string]any{}, opts...) {
			if err != nil {
				return sample{}, err
			}
			var v int
			if err := chunk.Decode(&v); err != nil || v != 0 {
				return sample{}, fmt.Errorf("ints yielded %s first (%v)", chunk.JSON(), err)
			}
			tb = time.Now()
			break
		}
		t1 := time.Now()
		if tb.IsZero() {
			return sample{}, errors.New("ints yielded nothing")
		}
		brks, wholes = append(brks, t1.Sub(tb)), append(wholes, t1.Sub(t0))
	}
	s := latencies(brks, time.Since(start))
	slices.Sort(wholes)
	s.p50b, s.p99b = harness.Quantile(wholes, 0.5), harness.Quantile(wholes, 0.99)
	return s, nil
}

// callbacks calls the callbacks tool (K callbacks to bench_echo in a loop)
// back to back: units are callbacks, elapsed the Go wall time of the calls
// (so the rate includes the enclosing call, one per K callbacks); the
// latencies are each callback's round trip as Python timed it.
func (b *bench) callbacks(ctx context.Context, pool string, d time.Duration) (sample, error) {
	args := map[string]any{"name": callbackName, "k": b.o.k}
	var lat []time.Duration
	var inner time.Duration
	start := time.Now()
	for end := start.Add(d); time.Now().Before(end); {
		res, err := b.rt.Call(ctx, pool, "callbacks", args)
		if err != nil {
			return sample{}, err
		}
		var out struct {
			LoopNs int64   `json:"loop_ns"`
			LatNs  []int64 `json:"lat_ns"`
		}
		if err := res.Decode(&out); err != nil {
			return sample{}, err
		}
		if len(out.LatNs) != b.o.k {
			return sample{}, fmt.Errorf("callbacks returned %d latencies, want %d", len(out.LatNs), b.o.k)
		}
		for _, ns := range out.LatNs {
			lat = append(lat, time.Duration(ns))
		}
		inner += time.Duration(out.LoopNs)
	}
	s := latencies(lat, time.Since(start))
	s.inner = inner
	return s, nil
}

func latencies(lat []time.Duration, elapsed time.Duration) sample {
	slices.Sort(lat)
	s := sample{units: len(lat), elapsed: elapsed, p50: harness.Quantile(lat, 0.5), p99: harness.Quantile(lat, 0.99)}
	if len(lat) > 0 {
		s.max = lat[len(lat)-1]
	}
	return s
}

// ---------------------------------------------------------------- report

// med is the median over p's rounds of path id of f.
func (p *pool) med(id int, f func(sample) float64) float64 {
	xs := make([]float64, len(p.rounds[id]))
	for i, s := range p.rounds[id] {
		xs[i] = f(s)
	}
	return harness.Median(xs)
}

// ratio is the median over rounds of f(path a) / f(path b) in the same round.
func (p *pool) ratio(a, b int, f func(sample) float64) float64 {
	xs := make([]float64, len(p.rounds[a]))
	for i, s := range p.rounds[a] {
		xs[i] = f(s) / f(p.rounds[b][i])
	}
	return harness.Median(xs)
}

// spread is (max−min)/median of the rounds' rates, in percent.
func (p *pool) spread(id int) string {
	ss := p.rounds[id]
	lo, hi := ss[0].rate(), ss[0].rate()
	for _, s := range ss {
		lo, hi = min(lo, s.rate()), max(hi, s.rate())
	}
	return fmt.Sprintf("%.0f%%", 100*(hi-lo)/p.med(id, rate))
}

func rate(s sample) float64      { return s.rate() }
func p50(s sample) float64       { return float64(s.p50) }
func p99(s sample) float64       { return float64(s.p99) }
func p50b(s sample) float64      { return float64(s.p50b) }
func p99b(s sample) float64      { return float64(s.p99b) }
func maxOf(s sample) float64     { return float64(s.max) }
func units(s sample) float64     { return float64(s.units) }
func goPer(s sample) float64     { return float64(s.goCPU) / float64(max(s.units, 1)) }
func pyPer(s sample) float64     { return float64(s.pyCPU) / float64(max(s.units, 1)) }
func innerRate(s sample) float64 { return float64(s.units) / s.inner.Seconds() }

func fmtX(x float64) string { return fmt.Sprintf("%.2f", x) }

func report(w io.Writer, o options, interp pyworker.Interpreter, pools []*pool, took time.Duration, loadBefore string) {
	mb := float64(o.block) / 1e6
	fmt.Fprintln(w, "# snakepit stream, callback and session benchmark")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "- command: `%s`\n", command())
	fmt.Fprintf(w, "- settings: %d rounds × %s per path and transport, %s warm-up per path; every path of every transport in each round, interleaved; took %s\n",
		o.rounds, o.duration, o.warmup, took.Round(time.Second))
	fmt.Fprintf(w, "- machine: %s, %d CPUs usable by this process (GOMAXPROCS %d), %s/%s, Linux %s\n",
		harness.CPUModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, harness.Kernel())
	fmt.Fprintf(w, "- 1-minute load average before / after the run (after includes the run itself): %s / %s\n", loadBefore, harness.LoadAvg())
	fmt.Fprintf(w, "- software: %s; Python %s (%s)%s\n", runtime.Version(), interp.Version, interp.Path, grpcVersions(interp.Path, pools))
	fmt.Fprintf(w, "- pools: one per transport (%s), 1 worker each, \"process\" profile (one call or stream at a time),"+
		" adapter testdata/pyadapters/stream_bench.py; one caller, so every path is one request after another\n", transportList(pools))
	fmt.Fprintln(w, "- baseline of every ratio: `rt.Call(item)`, a tool that returns its int argument, on the same pool in the same round")
	fmt.Fprintln(w, "- figures are medians over the rounds; ratios are medians of per-round ratios; p50/p99 are nearest-rank percentiles of every sample of a round;"+
		" CPU per item: user+system of this Go process (caller and runtime) / of the worker process (10 ms resolution), over the round, per unit")

	fmt.Fprintln(w)
	fmt.Fprintln(w, "## 1. Small items: a stream vs unary calls")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "`ints()` yields 0, 1, 2, … for ever; the loop decodes and checks each item and breaks once the round's time is up"+
		" (items/s: items taken / time from the `Stream` call to the last item). Unary: `item(i)` called back to back, one int per call.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| transport | path | items/s | / unary | spread | items per round | Go CPU per item | Python CPU per item |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|")
	for _, p := range pools {
		for _, id := range []int{unaryPath, streamW1Path, streamPath, streamW256Path} {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %.0f | %s | %s |\n", p.transport, pathNames[id], harness.FmtRate(p.med(id, rate)),
				fmtX(p.ratio(id, unaryPath, rate)), p.spread(id), p.med(id, units), harness.FmtDur(p.med(id, goPer)), harness.FmtDur(p.med(id, pyPer)))
		}
	}

	fmt.Fprintln(w)
	fmt.Fprintf(w, "## 2. Bytes: a stream of %d KiB items vs unary calls returning %d KiB\n", o.block>>10, o.block>>10)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "`blocks(size)` yields the same %d-byte `bytes` for ever (raw items; the loop checks each length); unary: `block(size)` returns it. MB = 10⁶ bytes.\n", o.block)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| transport | path | items/s | MB/s | / unary | spread | Go CPU per item | Python CPU per item |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|")
	for _, p := range pools {
		for _, id := range []int{unaryBlockPath, streamBlockPath} {
			fmt.Fprintf(w, "| %s | %s | %s | %.0f | %s | %s | %s | %s |\n", p.transport, pathNames[id], harness.FmtRate(p.med(id, rate)),
				p.med(id, rate)*mb, fmtX(p.ratio(id, unaryBlockPath, rate)), p.spread(id), harness.FmtDur(p.med(id, goPer)), harness.FmtDur(p.med(id, pyPer)))
		}
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "## 3. Time to the first item vs a unary call")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "`first()` yields 0 at once and ends; streams back to back. Time to first item: from the `Stream` call until the loop body"+
		" gets the item; whole stream: until the loop has ended (the end of the stream received). Unary: one `rt.Call(item)`.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| transport | unary p50 | unary p99 | first item p50 | first item p99 | first item p50 / unary p50 | first item p99 / unary p99 | whole stream p50 | whole stream p99 | streams per round |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, p := range pools {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f |\n", p.transport,
			harness.FmtDur(p.med(unaryPath, p50)), harness.FmtDur(p.med(unaryPath, p99)),
			harness.FmtDur(p.med(firstPath, p50)), harness.FmtDur(p.med(firstPath, p99)),
			fmtX(p.ratio(firstPath, unaryPath, p50)), fmtX(p.ratio(firstPath, unaryPath, p99)),
			harness.FmtDur(p.med(firstPath, p50b)), harness.FmtDur(p.med(firstPath, p99b)), p.med(firstPath, units))
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "## 4. Breaking out of a stream")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "A stream of `ints()`, `break` after the first item; from the `break` until the `for` statement returns,"+
		" which is once Python has closed the generator and acknowledged (the runtime waits up to 1 s for that)."+
		" Whole stream: from the `Stream` call to the loop's return. Break max: the median over rounds of each round's largest.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| transport | window | break p50 | break p99 | break max | break p50 / unary p50 | whole stream p50 | whole stream p99 | streams per round |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, p := range pools {
		for _, id := range []int{breakPath, breakW1Path} {
			window := fmt.Sprintf("%d (default)", snakepit.DefaultWindow)
			if id == breakW1Path {
				window = "1"
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %.0f |\n", p.transport, window,
				harness.FmtDur(p.med(id, p50)), harness.FmtDur(p.med(id, p99)), harness.FmtDur(p.med(id, maxOf)),
				fmtX(p.ratio(id, unaryPath, p50)),
				harness.FmtDur(p.med(id, p50b)), harness.FmtDur(p.med(id, p99b)), p.med(id, units))
		}
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "## 5. Callbacks: Python calls Go")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "`callbacks(name, k=%d)`, a sync tool, calls `snakepit.call(\"%s\", i=i)` %d times in a loop; the Go handler returns `i`"+
		" (checked in Python). Callbacks/s: callbacks / Go wall time of the enclosing `rt.Call`s (one per %d callbacks);"+
		" in the loop: callbacks / the Python loops' own time. Round trip p50/p99: measured in Python, `time.perf_counter_ns()` around each"+
		" `snakepit.call`. Unary: `rt.Call(item)` calls/s and its p50 measured in Go.\n", o.k, callbackName, o.k, o.k)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| transport | unary calls/s | callbacks/s | callbacks/s / unary calls/s | callbacks/s in the loop | callback p50 | callback p99 | unary p50 | Go CPU per callback | Python CPU per callback |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, p := range pools {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", p.transport,
			harness.FmtRate(p.med(unaryPath, rate)), harness.FmtRate(p.med(callbackPath, rate)), fmtX(p.ratio(callbackPath, unaryPath, rate)),
			harness.FmtRate(p.med(callbackPath, innerRate)),
			harness.FmtDur(p.med(callbackPath, p50)), harness.FmtDur(p.med(callbackPath, p99)), harness.FmtDur(p.med(unaryPath, p50)),
			harness.FmtDur(p.med(callbackPath, goPer)), harness.FmtDur(p.med(callbackPath, pyPer)))
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "## 6. Sessions: Session.Call vs rt.Call")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "The same `item(i)` calls, back to back, through a strict session opened on the pool (`Session.Call`) and straight on the pool (`rt.Call`).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| transport | rt.Call calls/s | Session.Call calls/s | Session / rt.Call calls/s | rt.Call p50 | Session.Call p50 | Session / rt.Call p50 | rt.Call p99 | Session.Call p99 | Go CPU per call, rt / Session | Python CPU per call, rt / Session |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, p := range pools {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s |\n", p.transport,
			harness.FmtRate(p.med(unaryPath, rate)), harness.FmtRate(p.med(sessionPath, rate)), fmtX(p.ratio(sessionPath, unaryPath, rate)),
			harness.FmtDur(p.med(unaryPath, p50)), harness.FmtDur(p.med(sessionPath, p50)), fmtX(p.ratio(sessionPath, unaryPath, p50)),
			harness.FmtDur(p.med(unaryPath, p99)), harness.FmtDur(p.med(sessionPath, p99)),
			harness.FmtDur(p.med(unaryPath, goPer)), harness.FmtDur(p.med(sessionPath, goPer)),
			harness.FmtDur(p.med(unaryPath, pyPer)), harness.FmtDur(p.med(sessionPath, pyPer)))
	}
}

func transportList(pools []*pool) string {
	names := make([]string, len(pools))
	for i, p := range pools {
		names[i] = p.transport
	}
	return strings.Join(names, ", ")
}

// grpcVersions is "; grpcio X; protobuf Y" when a pool speaks gRPC.
func grpcVersions(python string, pools []*pool) string {
	if !slices.ContainsFunc(pools, func(p *pool) bool { return p.transport == "grpc" }) {
		return ""
	}
	out, err := exec.Command(python, "-c", "import grpc, google.protobuf as p; print(grpc.__version__, p.__version__)").Output()
	if f := strings.Fields(string(out)); err == nil && len(f) == 2 {
		return fmt.Sprintf("; grpcio %s; protobuf %s", f[0], f[1])
	}
	return ""
}

func command() string {
	return strings.Join(append([]string{"go", "run", "./bench/streambench"}, os.Args[1:]...), " ")
}
