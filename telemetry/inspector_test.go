package telemetry

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./telemetry -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file; if the change is intended, run with -update.\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

// fixtureReport is a fixed report with three pools: a saturated thread pool
// on a GIL Python, a process pool that leaks and crashes, and an idle one.
func fixtureReport() Report {
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	cpu := 0.9
	busy := PoolReport{Name: "embeddings", Profile: "thread", Python: "3.11.2", GILEnabled: true, Size: 2, Ready: 2,
		Queued: 90, QueueSize: 100, NoFreeCapacity: 420, Saturated: 7, CallCPUFraction: &cpu, Uptime: 2 * time.Hour,
		Workers: []WorkerReport{
			{ID: "embeddings-0", Pid: 4101, Ready: true, Capacity: 4, Load: 4, Uptime: 2 * time.Hour, Requests: 1200,
				RSS: 310 << 20, PSS: 250 << 20},
			{ID: "embeddings-1", Pid: 4102, Ready: true, Capacity: 4, Load: 4, Uptime: 90 * time.Minute, Requests: 980,
				RSS: 305 << 20, PSS: 247 << 20},
		}}
	leaky := PoolReport{Name: "ocr", Profile: "process", Python: "3.13.1", FreeThreaded: true, GILEnabled: true, Size: 2, Ready: 1,
		QueueSize: 1000, Recycles: map[string]int64{"memory": 3, "memory-hard-limit": 1, "age": 2}, Uptime: 30 * time.Minute,
		Workers: []WorkerReport{
			{ID: "ocr-0", Pid: 5201, Ready: true, Capacity: 1, Load: 0, Uptime: 4*time.Minute + 10*time.Second, Requests: 37,
				Restarts: 4, RSS: 1 << 30, PSS: 900 << 20, LastExit: "crashed: signal 9 (SIGKILL)"},
			{ID: "ocr-1", Pid: 0, Capacity: 1, Starting: true, Restarts: 1, LastExit: "crashed: exit status 3"},
		}}
	idle := PoolReport{Name: "text", Profile: "process", Python: "3.11.2", GILEnabled: true, Size: 4, Ready: 4, QueueSize: 1000}
	for i := 0; i < 4; i++ {
		idle.Workers = append(idle.Workers, WorkerReport{ID: "text-" + string(rune('0'+i)), Pid: 6300 + i, Ready: true,
			Capacity: 1, Uptime: 700 * time.Millisecond, Requests: 2, RSS: 20 << 20, PSS: 12 << 20})
	}
	r := Report{Time: at}
	for _, p := range []PoolReport{busy, leaky, idle} {
		r.Pools = append(r.Pools, Complete(p, Thresholds{}, nil))
	}
	return r
}

func TestInspectJSONGolden(t *testing.T) {
	b, err := json.MarshalIndent(fixtureReport(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "inspect.golden.json", append(b, '\n'))
}

func TestReportJSONRoundTrip(t *testing.T) {
	r := fixtureReport()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, r) {
		t.Errorf("round trip changed the report:\ngot  %+v\nwant %+v", back, r)
	}
}

// TestEmptyPoolJSONShape: nil maps and slices come out as {} and [], so a
// reader of the JSON never meets null where it expects a collection.
func TestEmptyPoolJSONShape(t *testing.T) {
	b, err := json.Marshal(Complete(PoolReport{Name: "p"}, Thresholds{}, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"recycles":{}`, `"workers":[]`, `"recommendations":[]`, `"uptime_seconds":0`, `"call_cpu_fraction":null`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s: %s", want, b)
		}
	}
}

func TestCompleteTotals(t *testing.T) {
	p := Complete(PoolReport{Size: 3, Ready: 2, Restarts: 99, Workers: []WorkerReport{
		{Ready: true, Capacity: 4, Load: 3, Requests: 10, Restarts: 1},
		{Ready: true, Capacity: 4, Load: 1, Requests: 5},
		{Ready: true, Retiring: true, Capacity: 4, Load: 2, Requests: 100, Restarts: 2}, // takes no new call
		{Starting: true, Capacity: 4},
	}}, Thresholds{}, nil)
	if p.Capacity != 8 || p.Load != 4 || p.Utilisation != 0.5 || p.Requests != 115 || p.Restarts != 99 {
		t.Errorf("capacity %d load %d utilisation %v requests %d restarts %d; want 8 4 0.5 115 99",
			p.Capacity, p.Load, p.Utilisation, p.Requests, p.Restarts)
	}
	// Pool totals since the start (workers since replaced included) are kept;
	// lower ones give way to the workers' sums.
	if q := Complete(PoolReport{Requests: 1, Restarts: 0, Workers: []WorkerReport{{Requests: 7, Restarts: 2}}}, Thresholds{}, nil); q.Requests != 7 || q.Restarts != 2 {
		t.Errorf("requests %d restarts %d; want the workers' sums 7 and 2", q.Requests, q.Restarts)
	}
	if p.Workers[0].Utilisation != 0.75 || p.Workers[2].Utilisation != 0.5 || p.Workers[3].Utilisation != 0 {
		t.Errorf("worker utilisations %v %v %v", p.Workers[0].Utilisation, p.Workers[2].Utilisation, p.Workers[3].Utilisation)
	}
}

func TestCheckSaturation(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		load, capacity, queued int
		queueSize              int
		saturated              int64
		refusedAgo             float64 // seconds; 0: not known
		want                   string
		why                    string
	}{
		{"idle", 0, 4, 0, 10, 0, 0, LevelOK, "utilisation 0% (0/4), queue empty"},
		{"busy below warn", 3, 4, 0, 10, 0, 0, LevelOK, "utilisation 75% (3/4)"},
		{"utilisation at warn", 4, 5, 0, 10, 0, 0, LevelWarn, "utilisation 80% (4/5) ≥ 80%"},
		{"queue not empty", 1, 4, 1, 10, 0, 0, LevelWarn, "1 calls queued"},
		{"queue 80% full", 4, 4, 8, 10, 0, 0, LevelCritical, "queue 8/10 is ≥ 80% full"},
		{"queue 70% full", 4, 4, 7, 10, 0, 0, LevelWarn, "7 calls queued"},
		{"refused calls", 0, 4, 0, 10, 2, 0, LevelCritical, "2 calls refused"},
		{"refused a moment ago", 0, 4, 0, 10, 2, 5, LevelCritical, "2 calls refused (queue full) since start, the last 5s ago"},
		{"refused long ago", 0, 4, 0, 10, 2, 600, LevelOK, "queue empty; 2 calls refused (queue full) since start, the last 10m0s ago"},
		{"refused long ago, busy now", 4, 4, 0, 10, 2, 600, LevelWarn, "utilisation 100% (4/4) ≥ 80%; 2 calls refused"},
		{"no capacity at all", 0, 0, 0, 10, 0, 0, LevelOK, "utilisation 0% (0/0)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := PoolReport{Load: tc.load, Capacity: tc.capacity, Utilisation: ratio(tc.load, tc.capacity),
				Queued: tc.queued, QueueSize: tc.queueSize, Saturated: tc.saturated}
			if tc.refusedAgo > 0 {
				p.RefusedSecondsAgo = &tc.refusedAgo
			}
			got := CheckSaturation(p, Thresholds{})
			if got.Level != tc.want || !strings.Contains(got.Why, tc.why) {
				t.Errorf("got %+v, want level %s with %q", got, tc.want, tc.why)
			}
		})
	}
}

func TestRenderTableGolden(t *testing.T) {
	for _, tc := range []struct {
		file string
		opts TableOptions
	}{
		{"table.golden.txt", TableOptions{}},
		{"table_detailed.golden.txt", TableOptions{Detailed: true, Recommendations: true}},
		{"table_color.golden.txt", TableOptions{Detailed: true, Color: true}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var b bytes.Buffer
			if err := RenderTable(&b, fixtureReport(), tc.opts); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.file, b.Bytes())
			if hasANSI := strings.Contains(b.String(), "\x1b["); hasANSI != tc.opts.Color {
				t.Errorf("ANSI codes present: %v, want %v", hasANSI, tc.opts.Color)
			}
		})
	}
}

func TestRenderTableNoPools(t *testing.T) {
	var b bytes.Buffer
	if err := RenderTable(&b, Report{Time: time.Unix(0, 0)}, TableOptions{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "no pools") {
		t.Errorf("got %q", b.String())
	}
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[uint64]string{0: "-", 512: "512 B", 1536: "1.5 KiB", 310 << 20: "310.0 MiB", 1 << 30: "1.0 GiB"} {
		if got := formatBytes(in); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", in, got, want)
		}
	}
}
