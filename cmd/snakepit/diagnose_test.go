package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// diagnose runs "snakepit diagnose scaling args..." in-process and returns
// its stdout, stderr and exit status.
func diagnose(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, append([]string{"diagnose", "scaling"}, args...), &out, &errOut)
	t.Logf("exit %d, stderr:\n%s\nstdout:\n%s", code, errOut.String(), out.String())
	return out.String(), errOut.String(), code
}

// quickScaling measures profile_bench's io tool (a 0.5ms sleep) briefly.
func quickScaling(format string, extra ...string) []string {
	return append([]string{"--python", goodPython, "--python-path", adapterDir,
		"--adapter", "profile_bench", "--tool", "io", "--args", `{"seconds": 0.0005}`,
		"--duration", "100ms", "--warmup", "20ms", "--concurrency", "1,2", "--workers", "2",
		"--format", format}, extra...)
}

func TestDiagnoseScalingJSON(t *testing.T) {
	needPython(t, goodPython)
	out, stderr, code := diagnose(t, quickScaling("json")...)
	if code != exitOK {
		t.Fatalf("exit status %d, want %d", code, exitOK)
	}
	var rep scalingReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not JSON: %v", err)
	}
	if rep.Tool != "io" || rep.Adapter != "profile_bench" || rep.Transport != "native" {
		t.Errorf("header %+v", rep)
	}
	if rep.Python.Version == "" || rep.Python.Implementation != "CPython" || rep.Python.Path != goodPython {
		t.Errorf("python facts %+v", rep.Python)
	}
	var names []string
	for _, p := range rep.Profiles {
		names = append(names, p.Profile)
		if !p.Ran || p.Reason != "" {
			t.Errorf("%s profile did not run: %q", p.Profile, p.Reason)
		}
		var levels []int
		for _, l := range p.Levels {
			levels = append(levels, l.Concurrency)
			if l.Calls <= 0 || l.CallsPerSec <= 0 || l.Errors != 0 || l.P50ms <= 0 || l.P99ms < l.P50ms {
				t.Errorf("%s c=%d: %+v", p.Profile, l.Concurrency, l)
			}
		}
		if !slices.Equal(levels, []int{1, 2}) {
			t.Errorf("%s levels %v, want [1 2]", p.Profile, levels)
		}
	}
	if !slices.Equal(names, []string{"process", "thread"}) {
		t.Errorf("profiles %v, want [process thread]", names)
	}
	if w := rep.Profiles[0]; w.Workers != 2 || w.ThreadsPerWorker != 1 {
		t.Errorf("process shape %d x %d, want 2 x 1", w.Workers, w.ThreadsPerWorker)
	}
	if w := rep.Profiles[1]; w.Workers != 1 || w.ThreadsPerWorker != 2 {
		t.Errorf("thread shape %d x %d, want 1 x 2 (--threads defaults to --workers)", w.Workers, w.ThreadsPerWorker)
	}
	r := rep.Recommendation
	if (r.Profile != "process" && r.Profile != "thread") || r.AtConcurrency != 2 || r.Ratio < 1 ||
		!strings.Contains(r.Summary, "at concurrency 2") || !strings.Contains(r.GIL, "has a GIL") {
		t.Errorf("recommendation %+v", r)
	}
	// stderr is no terminal: one plain line per level, no bar
	if n := strings.Count(stderr, " calls/s, p50 "); n != 4 || strings.Contains(stderr, "\r") {
		t.Errorf("stderr has %d level lines (want 4), or a progress bar", n)
	}
}

func TestDiagnoseScalingTable(t *testing.T) {
	needPython(t, goodPython)
	out, _, code := diagnose(t, quickScaling("table", "--threads", "3")...)
	if code != exitOK {
		t.Fatalf("exit status %d, want %d", code, exitOK)
	}
	wantLines(t, out,
		"adapter profile_bench, tool io, args {\"seconds\":0.0005}, transport native\n",
		"python "+goodPython+" (CPython 3.",
		"not free-threaded, GIL on)",
		"process: 2 workers x 1 call; thread: 1 worker x 3 threads; 100ms per level after 20ms warmup",
		"\nrecommendation: ",
		"throughput (",
		"calls/s) at concurrency 2",
		"has a GIL: threads of one worker take turns running Python code.")
	header := strings.Fields("concurrency process calls/s p50 p99 errors thread calls/s p50 p99 errors thread/process")
	headers, rows := 0, 0
	for _, l := range strings.Split(out, "\n") {
		if slices.Equal(strings.Fields(l), header) {
			headers++
		}
		f := strings.Fields(l)
		if len(f) == 10 && (f[0] == "1" || f[0] == "2") && strings.HasSuffix(f[9], "x") {
			rows++
		}
	}
	if headers != 1 || rows != 2 {
		t.Errorf("%d table headers (want 1), %d rows with both profiles (want 2)", headers, rows)
	}
}

// TestDiagnoseScalingThreadUnsafe: an adapter not declared thread-safe is
// measured in the process profile; the thread column says why it did not run.
func TestDiagnoseScalingThreadUnsafe(t *testing.T) {
	needPython(t, goodPython)
	out, _, code := diagnose(t, "--python", goodPython, "--python-path", adapterDir,
		"--adapter", "echo_tools", "--tool", "echo", "--args", `{"value": 1}`,
		"--duration", "50ms", "--warmup", "0s", "--concurrency", "1", "--workers", "1")
	if code != exitOK {
		t.Fatalf("exit status %d, want %d", code, exitOK)
	}
	wantLines(t, out,
		"-       - not run: adapter 'echo_tools' is not declared thread-safe (once it is safe, set __snakepit_thread_safe__ = True",
		"recommendation: process (the thread profile could not run: adapter 'echo_tools' is not declared thread-safe",
		"only helps I/O-bound or GIL-releasing tools; use process.")
}

func TestDiagnoseScalingToolFails(t *testing.T) {
	needPython(t, goodPython)
	_, stderr, code := diagnose(t, "--python", goodPython, "--python-path", adapterDir,
		"--adapter", "profile_bench", "--tool", "no_such_tool", "--workers", "1", "--concurrency", "1")
	if code != exitUsage || !strings.Contains(stderr, "the first call of no_such_tool failed") {
		t.Errorf("exit status %d (want %d), stderr %q", code, exitUsage, stderr)
	}
}

func TestDiagnoseScalingBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--tool", "io"}, // no --adapter
		{"--adapter", "m", "--tool", "io", "--args", "[1]"},
		{"--adapter", "m", "--tool", "io", "--concurrency", "1,zero"},
		{"--adapter", "m", "--tool", "io", "--workers", "0"},
		{"--adapter", "m", "--tool", "io", "--format", "yaml"},
		{"--adapter", "m", "--tool", "io", "--transport", "carrier-pigeon"},
	} {
		if _, _, code := diagnose(t, args...); code != exitUsage {
			t.Errorf("%v: exit status %d, want %d", args, code, exitUsage)
		}
	}
}

func TestParseLevels(t *testing.T) {
	for _, c := range []struct {
		in      string
		workers int
		want    []int
	}{
		{"", 4, []int{1, 2, 4, 8}},
		{"", 3, []int{1, 2, 4, 6}},
		{"", 1, []int{1, 2}},
		{"8, 1,2,2", 4, []int{1, 2, 8}},
	} {
		got, err := parseLevels(c.in, c.workers)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("parseLevels(%q, %d) = %v, %v; want %v", c.in, c.workers, got, err, c.want)
		}
	}
}

func TestRecommendFreeThreaded(t *testing.T) {
	level := func(rate float64) []levelResult { return []levelResult{{Concurrency: 8, Calls: 1, CallsPerSec: rate}} }
	rep := &scalingReport{Tool: "cpu", Python: pythonFacts{Implementation: "CPython", Version: "3.13.5", FreeThreaded: true},
		Profiles: []profileResult{{Profile: "process", Ran: true, Levels: level(1000)}, {Profile: "thread", Ran: true, Levels: level(3000)}}}
	r := recommend(rep)
	if r.Profile != "thread" || r.Ratio != 3 || !strings.Contains(r.Summary, "3.00x the process profile's throughput (3000 vs 1000 calls/s) at concurrency 8") ||
		!strings.Contains(r.GIL, "free-threaded with the GIL off") || !strings.Contains(r.GIL, "use thread") {
		t.Errorf("%+v", r)
	}
	rep.Profiles[1].Levels = level(400)
	if r := recommend(rep); r.Profile != "process" || !strings.Contains(r.GIL, "did not scale on threads") {
		t.Errorf("%+v", r)
	}
}
