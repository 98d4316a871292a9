package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/pyworker"
)

func newDiagnoseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "diagnose",
		Short: "Measure how an adapter behaves under load",
		Long:  "diagnose runs real workers for an adapter and measures them; see its subcommands.",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newScalingCmd())
	return cmd
}

// scalingOptions are the flags of snakepit diagnose scaling.
type scalingOptions struct {
	adapter     string
	tool        string
	args        string // a JSON object
	python      string
	pythonPath  []string
	transport   string
	workers     int
	threads     int    // 0: workers
	concurrency string // "1,2,4"; "": 1,2,4,...,2×workers
	duration    time.Duration
	warmup      time.Duration
	format      string
}

func newScalingCmd() *cobra.Command {
	o := scalingOptions{}
	cmd := &cobra.Command{
		Use:   "scaling --adapter MODULE[:Class] --tool NAME",
		Short: "Compare the process and the thread profile at rising concurrency",
		Long: `scaling starts a pool for the adapter in the process profile (--workers
processes, one call at a time each), measures calls of --tool at each
--concurrency level (after a --warmup, for --duration), stops it, and does the
same for the thread profile (one worker running --threads calls at once). It
prints calls/s, median and 99th-percentile latency and errors per profile and
level, and recommends a profile from the throughput at the highest level and
the interpreter's GIL.

The thread profile needs an adapter declared thread-safe; when its pool cannot
start, the comparison column says why and the process profile is still
measured. A progress bar goes to stderr when it is a terminal (one plain line
per level when it is not, or when NO_COLOR or CI is set).

Exit status: 0 when every measured call succeeded, 1 when some failed (the
report counts them), 2 on bad flags or when the process pool cannot start or
the tool fails on its first call.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.adapter, "adapter", "", "adapter to measure, MODULE or MODULE:Class (required)")
	f.StringVar(&o.tool, "tool", "", "tool to call (required)")
	f.StringVar(&o.args, "args", "{}", "the tool's arguments, a JSON object")
	f.StringVar(&o.python, "python", "", "Python interpreter (default: $SNAKEPIT_PYTHON, else python3, /usr/bin/python3, python)")
	f.StringArrayVar(&o.pythonPath, "python-path", nil, "directory put on the adapter's sys.path (repeatable)")
	f.StringVar(&o.transport, "transport", pyworker.DefaultTransport, "worker transport: native or grpc")
	f.IntVar(&o.workers, "workers", runtime.NumCPU(), "worker processes of the process profile")
	f.IntVar(&o.threads, "threads", 0, "threads of the thread profile's one worker (default: --workers)")
	f.StringVar(&o.concurrency, "concurrency", "", "comma-separated concurrency levels (default: 1,2,4,... up to 2×--workers)")
	f.DurationVar(&o.duration, "duration", 2*time.Second, "how long each level is measured")
	f.DurationVar(&o.warmup, "warmup", 300*time.Millisecond, "calls made and not counted before each level")
	f.StringVar(&o.format, "format", "table", "output: table or json")
	_ = cmd.MarkFlagRequired("adapter")
	_ = cmd.MarkFlagRequired("tool")
	return cmd
}

// scalingPlan is the checked form of the flags.
type scalingPlan struct {
	args      map[string]any
	levels    []int
	threads   int
	transport pyworker.Transport
}

func (o *scalingOptions) plan() (scalingPlan, error) {
	var p scalingPlan
	var err error
	if p.transport, err = pyworker.LookupTransport(o.transport); err != nil {
		return p, fmt.Errorf("--transport: %w", err)
	}
	if err := json.Unmarshal([]byte(o.args), &p.args); err != nil || p.args == nil {
		return p, fmt.Errorf("--args %q: want a JSON object such as '{\"n\": 1000}'", o.args)
	}
	if o.workers < 1 {
		return p, fmt.Errorf("--workers %d: want 1 or more", o.workers)
	}
	p.threads = o.threads
	if p.threads == 0 {
		p.threads = o.workers
	}
	if p.threads < 1 {
		return p, fmt.Errorf("--threads %d: want 1 or more", o.threads)
	}
	if o.duration <= 0 {
		return p, fmt.Errorf("--duration %s: want more than 0", o.duration)
	}
	if o.warmup < 0 {
		return p, fmt.Errorf("--warmup %s: want 0 or more", o.warmup)
	}
	if o.format != "table" && o.format != "json" {
		return p, fmt.Errorf("--format %q: want table or json", o.format)
	}
	if p.levels, err = parseLevels(o.concurrency, o.workers); err != nil {
		return p, fmt.Errorf("--concurrency: %w", err)
	}
	return p, nil
}

// parseLevels parses "1,2,4"; "" gives 1,2,4,... up to 2×workers.
func parseLevels(s string, workers int) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		var levels []int
		for c := 1; c < 2*workers; c *= 2 {
			levels = append(levels, c)
		}
		return append(levels, 2*workers), nil
	}
	var levels []int
	for _, part := range strings.Split(s, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || c < 1 {
			return nil, fmt.Errorf("%q is not a positive whole number", part)
		}
		levels = append(levels, c)
	}
	slices.Sort(levels)
	return slices.Compact(levels), nil
}

// levelResult is one profile measured at one concurrency.
type levelResult struct {
	Concurrency int     `json:"concurrency"`
	Calls       int     `json:"calls"` // that succeeded
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"seconds"`
	CallsPerSec float64 `json:"calls_per_sec"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	FirstError  string  `json:"first_error,omitempty"`
}

// profileResult is one profile at every level, or why it did not run.
type profileResult struct {
	Profile          string        `json:"profile"`
	Workers          int           `json:"workers"`
	ThreadsPerWorker int           `json:"threads_per_worker"`
	Ran              bool          `json:"ran"`
	Reason           string        `json:"reason,omitempty"` // why it did not run
	Levels           []levelResult `json:"levels"`
}

type pythonFacts struct {
	Path           string `json:"path"`
	Version        string `json:"version"`
	Implementation string `json:"implementation,omitempty"`
	FreeThreaded   bool   `json:"free_threaded"`
	GILEnabled     bool   `json:"gil_enabled"`
}

type recommendation struct {
	Profile       string  `json:"profile"`
	Ratio         float64 `json:"ratio"`          // its calls/s over the other profile's, at AtConcurrency (0: no comparison)
	AtConcurrency int     `json:"at_concurrency"` // the highest level
	Summary       string  `json:"summary"`
	GIL           string  `json:"gil"`
}

type scalingReport struct {
	Adapter        string          `json:"adapter"`
	Tool           string          `json:"tool"`
	Args           map[string]any  `json:"args"`
	Transport      string          `json:"transport"`
	Python         pythonFacts     `json:"python"`
	DurationMs     int64           `json:"duration_ms"`
	WarmupMs       int64           `json:"warmup_ms"`
	Profiles       []profileResult `json:"profiles"`
	Recommendation recommendation  `json:"recommendation"`
}

func (o *scalingOptions) run(ctx context.Context, stdout, stderr io.Writer) error {
	p, err := o.plan()
	if err != nil {
		return err
	}
	in, err := pyworker.FindInterpreter(ctx, o.python, p.transport.RequiredModules())
	if err != nil {
		return err
	}
	rep := &scalingReport{Adapter: o.adapter, Tool: o.tool, Args: p.args, Transport: p.transport.Name(),
		Python:     pythonFacts{Path: in.Path, Version: in.Version, FreeThreaded: in.FreeThreaded, GILEnabled: in.GILEnabled},
		DurationMs: o.duration.Milliseconds(), WarmupMs: o.warmup.Milliseconds()}
	prog := newScalingProgress(stderr, 2*len(p.levels), o.warmup+o.duration)
	defer prog.done()

	shapes := []profileResult{
		{Profile: "process", Workers: o.workers, ThreadsPerWorker: 1},
		{Profile: "thread", Workers: 1, ThreadsPerWorker: p.threads},
	}
	for i, shape := range shapes {
		res, err := o.measureProfile(ctx, in, p, shape, prog, i*len(p.levels), &rep.Python)
		if err != nil {
			return err
		}
		rep.Profiles = append(rep.Profiles, res)
	}
	prog.done()
	rep.Recommendation = recommend(rep)
	if o.format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.printTable(stdout)
	}
	for _, pr := range rep.Profiles {
		for _, l := range pr.Levels {
			if l.Errors > 0 {
				return errChecksFailed
			}
		}
	}
	return nil
}

// measureProfile starts a runtime for one profile, measures every level and
// stops it. Only a process pool that cannot start (or whose first call fails)
// is an error; the thread profile's failure becomes its Reason.
func (o *scalingOptions) measureProfile(ctx context.Context, in pyworker.Interpreter, p scalingPlan,
	res profileResult, prog *scalingProgress, step int, py *pythonFacts) (profileResult, error) {
	res.Levels = []levelResult{}
	prog.describe(fmt.Sprintf("starting %s pool", res.Profile))
	rt, err := snakepit.Start(ctx, o.runtimeConfig(in, p, res))
	if err == nil {
		_, err = rt.Call(ctx, res.Profile, o.tool, p.args) // a tool that cannot run is not measured
		if err != nil {
			_ = rt.Stop(context.WithoutCancel(ctx))
			err = fmt.Errorf("the first call of %s failed: %w", o.tool, err)
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if res.Profile == "process" {
			var be *snakepit.BootError
			if errors.As(err, &be) {
				return res, fmt.Errorf("process profile of %s: %s (snakepit doctor --adapter %s shows the traceback)",
					o.adapter, startFailure(err), o.adapter)
			}
			return res, fmt.Errorf("process profile of %s: %s", o.adapter, startFailure(err))
		}
		res.Reason = startFailure(err)
		prog.skip(step, len(p.levels), fmt.Sprintf("%-7s not run: %s", res.Profile, res.Reason))
		return res, nil
	}
	defer func() { _ = rt.Stop(context.WithoutCancel(ctx)) }()
	res.Ran = true
	if st, err := rt.Stats(ctx, res.Profile); err == nil && len(st) > 0 {
		// what a worker reports once its adapter is imported: an extension
		// module can turn the GIL back on in a free-threaded build
		py.Version, py.Implementation = st[0].Python, st[0].Implementation
		py.FreeThreaded, py.GILEnabled = st[0].FreeThreaded, st[0].GILEnabled
	}
	for i, c := range p.levels {
		prog.begin(step+i, fmt.Sprintf("%-7s c=%d", res.Profile, c))
		l, err := o.measureLevel(ctx, rt, res.Profile, p.args, c)
		if err != nil {
			return res, err
		}
		res.Levels = append(res.Levels, l)
		prog.finish(step+i, fmt.Sprintf("%-7s c=%-3d %s", res.Profile, c, l.line()))
	}
	return res, nil
}

func (o *scalingOptions) runtimeConfig(in pyworker.Interpreter, p scalingPlan, res profileResult) snakepit.Config {
	paths := absPaths(o.pythonPath)
	return snakepit.Config{
		Python: in.Path,
		Logger: hclog.NewNullLogger(), // worker output would tear the progress bar; failures come back as errors
		Pools: []snakepit.PoolConfig{{Name: res.Profile, Adapter: o.adapter, Size: res.Workers,
			Profile: res.Profile, ThreadsPerWorker: res.ThreadsPerWorker, Transport: p.transport.Name(),
			PythonPath: paths, QueueSize: max(snakepit.DefaultQueueSize, 2*slices.Max(p.levels))}},
	}
}

// startFailure is the one-line reason a pool did not start or its first
// call failed.
func startFailure(err error) string {
	var be *snakepit.BootError
	if errors.As(err, &be) {
		if strings.Contains(be.Message, "not declared thread-safe") {
			msg, _, _ := strings.Cut(be.Message, ", but ")
			return msg + " (once it is safe, set __snakepit_thread_safe__ = True or subclass snakepit.ThreadSafeAdapter)"
		}
		return bootSummary(be)
	}
	var pe *snakepit.PythonError
	if errors.As(err, &pe) {
		return fmt.Sprintf("%s raised %s: %s", pe.Tool, pe.Type, pe.Message)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(err.Error()), "\n")
	return line
}

// measureLevel runs c callers for the warmup (not counted), then for the
// duration. A call started before the end is waited for and counted.
func (o *scalingOptions) measureLevel(ctx context.Context, rt *snakepit.Runtime, pool string, args map[string]any, c int) (levelResult, error) {
	if o.warmup > 0 {
		if _, _, _, err := hammer(ctx, rt, pool, o.tool, args, c, o.warmup); err != nil {
			return levelResult{}, err
		}
	}
	start := time.Now()
	lat, errs, first, err := hammer(ctx, rt, pool, o.tool, args, c, o.duration)
	if err != nil {
		return levelResult{}, err
	}
	secs := time.Since(start).Seconds()
	l := levelResult{Concurrency: c, Calls: len(lat), Errors: errs, Seconds: round3(secs),
		CallsPerSec: round3(float64(len(lat)) / secs), FirstError: first}
	if len(lat) > 0 {
		slices.Sort(lat)
		l.P50ms, l.P99ms = ms(percentile(lat, 0.50)), ms(percentile(lat, 0.99))
	}
	return l, nil
}

// hammer keeps c calls in flight for d and returns the latencies of those
// that succeeded, how many failed and the first failure. err is only the
// context's.
func hammer(ctx context.Context, rt *snakepit.Runtime, pool, tool string, args map[string]any, c int, d time.Duration) (
	lat []time.Duration, errs int, first string, err error) {
	end := time.Now().Add(d)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			var mine []time.Duration
			var failed int
			var firstErr string
			for ctx.Err() == nil && time.Now().Before(end) {
				t0 := time.Now()
				_, err := rt.Call(ctx, pool, tool, args)
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					if failed++; firstErr == "" {
						firstErr = startFailure(err)
					}
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, mine...)
			errs += failed
			if first == "" {
				first = firstErr
			}
		})
	}
	wg.Wait()
	return lat, errs, first, ctx.Err()
}

// percentile is the nearest-rank percentile of sorted latencies.
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func (l levelResult) line() string {
	return fmt.Sprintf("%s calls/s, p50 %s, p99 %s, %d errors", fmtRate(l.CallsPerSec), fmtMs(l.P50ms), fmtMs(l.P99ms), l.Errors)
}

func fmtRate(r float64) string {
	if r >= 100 {
		return strconv.FormatFloat(r, 'f', 0, 64)
	}
	return strconv.FormatFloat(r, 'f', 1, 64)
}

func fmtMs(m float64) string {
	switch {
	case m == 0:
		return "-"
	case m < 10:
		return strconv.FormatFloat(m, 'f', 2, 64) + "ms"
	default:
		return strconv.FormatFloat(m, 'f', 1, 64) + "ms"
	}
}

// recommend picks the profile with the higher throughput at the highest
// level both measured, and explains the GIL's part.
func recommend(rep *scalingReport) recommendation {
	proc, thr := rep.Profiles[0], rep.Profiles[1]
	r := recommendation{Profile: "process", GIL: gilNote(rep.Python)}
	if len(proc.Levels) > 0 {
		r.AtConcurrency = proc.Levels[len(proc.Levels)-1].Concurrency
	}
	if !thr.Ran {
		r.Summary = "process (the thread profile could not run: " + thr.Reason + ")"
		if rep.Python.FreeThreaded && !rep.Python.GILEnabled {
			r.GIL += " The thread profile could pay off here: once the adapter is safe to share across threads, declare it and run this again."
		} else {
			r.GIL += " The thread profile on a GIL-enabled Python only helps I/O-bound or GIL-releasing tools; use process."
		}
		return r
	}
	p, t := proc.Levels[len(proc.Levels)-1], thr.Levels[len(thr.Levels)-1]
	win, lose, wr, lr := "process", "thread", p.CallsPerSec, t.CallsPerSec
	if t.CallsPerSec > p.CallsPerSec {
		win, lose, wr, lr = "thread", "process", t.CallsPerSec, p.CallsPerSec
	}
	r.Profile = win
	by := "the " + lose + " profile made no successful call"
	if lr > 0 {
		r.Ratio = round3(wr / lr)
		by = fmt.Sprintf("%.2fx the %s profile's throughput (%s vs %s calls/s)", r.Ratio, lose, fmtRate(wr), fmtRate(lr))
	}
	r.Summary = fmt.Sprintf("%s: %s at concurrency %d", win, by, r.AtConcurrency)
	if r.Ratio > 0 && r.Ratio < 1.1 {
		r.Summary += " (within 10%, which run-to-run noise can make)"
	}
	ratio := math.Inf(1)
	if p.CallsPerSec > 0 {
		ratio = t.CallsPerSec / p.CallsPerSec
	}
	r.GIL += " " + verdict(rep.Python, ratio, rep.Tool)
	return r
}

func gilNote(py pythonFacts) string {
	name := py.Implementation
	if name == "" {
		name = "Python"
	}
	switch {
	case py.FreeThreaded && !py.GILEnabled:
		return fmt.Sprintf("%s %s is free-threaded with the GIL off: a thread worker runs Python code on all its threads at once.", name, py.Version)
	case py.FreeThreaded:
		return fmt.Sprintf("%s %s is a free-threaded build but its GIL is on at run time (PYTHON_GIL=1, or an extension module that needs it): threads of one worker take turns running Python code.", name, py.Version)
	default:
		return fmt.Sprintf("%s %s has a GIL: threads of one worker take turns running Python code.", name, py.Version)
	}
}

// verdict says what the measurement means for the tool; ratio is the
// thread profile's calls/s over the process profile's at the highest level.
func verdict(py pythonFacts, ratio float64, tool string) string {
	gilOff := py.FreeThreaded && !py.GILEnabled
	switch {
	case !gilOff && ratio < 0.9:
		return fmt.Sprintf("The thread profile on a GIL-enabled Python only helps I/O-bound or GIL-releasing tools, and %s is not one here: use process.", tool)
	case !gilOff && ratio <= 1.1:
		return fmt.Sprintf("The thread profile kept up with process, so %s waits on I/O or releases the GIL: either works; thread needs one process's memory, process isolates a crash to one worker.", tool)
	case !gilOff:
		return fmt.Sprintf("The thread profile won, so %s waits on I/O or releases the GIL; thread also needs one process's memory. A pure-Python CPU-bound tool would not gain on this Python.", tool)
	case ratio >= 0.9:
		return fmt.Sprintf("%s scales on threads: use thread, which needs one process's memory.", tool)
	default:
		return fmt.Sprintf("Even with the GIL off, %s did not scale on threads here (shared objects or locks it contends on, or too few free cores): use process.", tool)
	}
}

func (rep *scalingReport) printTable(w io.Writer) {
	proc, thr := rep.Profiles[0], rep.Profiles[1]
	py := rep.Python
	build := "not free-threaded"
	if py.FreeThreaded {
		build = "free-threaded"
	}
	gil := "GIL on"
	if !py.GILEnabled {
		gil = "GIL off"
	}
	args, _ := json.Marshal(rep.Args)
	fmt.Fprintf(w, "adapter %s, tool %s, args %s, transport %s\n", rep.Adapter, rep.Tool, args, rep.Transport)
	fmt.Fprintf(w, "python %s (%s %s, %s, %s)\n", py.Path, cmp.Or(py.Implementation, "Python"), py.Version, build, gil)
	fmt.Fprintf(w, "process: %s x 1 call; thread: 1 worker x %s; %s per level after %s warmup\n\n",
		plural(proc.Workers, "worker"), plural(thr.ThreadsPerWorker, "thread"), time.Duration(rep.DurationMs)*time.Millisecond, time.Duration(rep.WarmupMs)*time.Millisecond)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "concurrency\tprocess calls/s\tp50\tp99\terrors\tthread calls/s\tp50\tp99\terrors\t thread/process\t")
	for i, p := range proc.Levels {
		row := fmt.Sprintf("%d\t%s\t%s\t%s\t%d\t", p.Concurrency, fmtRate(p.CallsPerSec), fmtMs(p.P50ms), fmtMs(p.P99ms), p.Errors)
		switch {
		case !thr.Ran:
			row += "-\t-\t-\t-\t"
			if i == 0 {
				row += " not run: " + thr.Reason
			}
			fmt.Fprintln(tw, row) // the reason is left-aligned after the last cell
			continue
		case i < len(thr.Levels):
			t := thr.Levels[i]
			ratio := "-"
			if p.CallsPerSec > 0 {
				ratio = fmt.Sprintf("%.2fx", t.CallsPerSec/p.CallsPerSec)
			}
			row += fmt.Sprintf("%s\t%s\t%s\t%d\t %s\t", fmtRate(t.CallsPerSec), fmtMs(t.P50ms), fmtMs(t.P99ms), t.Errors, ratio)
		}
		fmt.Fprintln(tw, row)
	}
	_ = tw.Flush()
	for _, pr := range rep.Profiles {
		for _, l := range pr.Levels {
			if l.FirstError != "" {
				fmt.Fprintf(w, "%s c=%d: %d errors, first: %s\n", pr.Profile, l.Concurrency, l.Errors, l.FirstError)
			}
		}
	}
	fmt.Fprintf(w, "\nrecommendation: %s\n", rep.Recommendation.Summary)
	fmt.Fprintf(w, "%s\n", rep.Recommendation.GIL)
}

// scalingProgress shows how far the measurement is: a progress bar on a
// terminal, else one plain line per level. Steps are the (profile, level)
// pairs; a running step advances with time.
type scalingProgress struct {
	w    io.Writer
	bar  *progressbar.ProgressBar // nil: plain lines
	step time.Duration            // one level's warmup and duration

	mu     sync.Mutex
	stop   chan struct{}
	ticker sync.WaitGroup
	closed bool
}

// permille is the bar's resolution within one step.
const permille = 1000

func newScalingProgress(w io.Writer, steps int, step time.Duration) *scalingProgress {
	p := &scalingProgress{w: w, step: step}
	if !fancyTerminal(w) {
		return p
	}
	p.bar = progressbar.NewOptions(steps*permille,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetRenderBlankState(true))
	return p
}

// fancyTerminal: w is a terminal, and neither NO_COLOR nor CI asks for
// plain output.
func fancyTerminal(w io.Writer) bool {
	if os.Getenv("NO_COLOR") != "" || os.Getenv("CI") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (p *scalingProgress) describe(s string) {
	if p.bar != nil {
		p.bar.Describe(s)
	}
}

// begin starts step n: the bar moves on with time until finish.
func (p *scalingProgress) begin(n int, desc string) {
	if p.bar == nil {
		return
	}
	p.bar.Describe(desc)
	p.mu.Lock()
	p.stop = make(chan struct{})
	stop := p.stop
	p.mu.Unlock()
	t0 := time.Now()
	p.ticker.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				frac := min(0.99, float64(time.Since(t0))/float64(p.step))
				_ = p.bar.Set(n*permille + int(frac*permille))
			}
		}
	})
}

// finish ends step n and prints its line (above the bar on a terminal).
func (p *scalingProgress) finish(n int, line string) {
	if p.bar == nil {
		fmt.Fprintln(p.w, line)
		return
	}
	p.mu.Lock()
	close(p.stop)
	p.mu.Unlock()
	p.ticker.Wait()
	p.above(line)
	_ = p.bar.Set((n + 1) * permille)
}

// above prints line where the bar was; the bar's next render goes under
// it. (progressbar.Bprintln would lose the line of the last step: a bar
// cleared on finish never prints what it buffered.)
func (p *scalingProgress) above(line string) {
	_ = p.bar.Clear()
	fmt.Fprintln(p.w, line)
}

// skip passes over steps n..n+count-1 with one line.
func (p *scalingProgress) skip(n, count int, line string) {
	if p.bar == nil {
		fmt.Fprintln(p.w, line)
		return
	}
	p.above(line)
	_ = p.bar.Set((n + count) * permille)
}

// done stops the ticker and clears the bar; it may be called more than once.
func (p *scalingProgress) done() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.stop != nil {
		select {
		case <-p.stop:
		default:
			close(p.stop)
		}
	}
	p.mu.Unlock()
	p.ticker.Wait()
	if p.bar != nil {
		_ = p.bar.Finish() // clears it (OptionClearOnFinish)
	}
}
