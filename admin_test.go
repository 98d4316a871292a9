package snakepit_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/telemetry"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestAdminEndpoint: metrics built from the event stream, the inspector as
// JSON and a health check, on loopback.
func TestAdminEndpoint(t *testing.T) {
	p := pool(t, "p", "echo_tools", 2)
	p.Restart = snakepit.RestartPolicy{MaxRestarts: 1, Period: time.Hour, InitialBackoff: time.Millisecond}
	log, _ := testLogger(t)
	rt, err := snakepit.Start(callCtx(t), snakepit.Config{Pools: []snakepit.PoolConfig{p}, Logger: log, AdminAddr: ":0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Stop(context.Background()) })
	host, _, _ := net.SplitHostPort(rt.AdminAddr())
	if host != "127.0.0.1" {
		t.Fatalf("admin endpoint on %s: a host-less address must bind loopback only", rt.AdminAddr())
	}
	base := "http://" + rt.AdminAddr()
	for range 3 {
		if _, err := rt.Call(callCtx(t), "p", "echo", nil); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = rt.Call(callCtx(t), "p", "raise_error", map[string]any{"message": "x"})

	var metrics string
	// A call's event is published just after its caller has the answer.
	waitFor(t, "the metrics to count the calls", 10*time.Second, func() bool {
		_, metrics = get(t, base+"/metrics")
		return strings.Contains(metrics, `snakepit_requests_total{outcome="ok",pool="p",tool="echo"} 3`) &&
			strings.Contains(metrics, `snakepit_requests_total{outcome="python_error",pool="p",tool="raise_error"} 1`)
	})
	for _, want := range []string{
		`snakepit_requests_total{outcome="python_error",pool="p",tool="raise_error"} 1`,
		`snakepit_request_duration_seconds_count{pool="p",tool="echo"} 3`,
		`snakepit_queue_depth{pool="p"} 0`,
		`snakepit_capacity{pool="p"} 2`,
		`snakepit_workers_ready{pool="p"} 2`,
		`snakepit_worker_rss_bytes{pool="p",worker="p-0"}`,
		`snakepit_capacity_reached_total{pool="p"} 4`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	code, body := get(t, base+"/inspect?pool=p")
	var rep telemetry.Report
	if err := json.Unmarshal([]byte(body), &rep); code != 200 || err != nil {
		t.Fatalf("/inspect: %d %v\n%s", code, err, body)
	}
	if len(rep.Pools) != 1 || rep.Pools[0].Name != "p" || len(rep.Pools[0].Workers) != 2 || rep.Pools[0].Requests != 4 {
		t.Fatalf("/inspect report: %+v", rep)
	}
	if code, _ := get(t, base+"/inspect?pool=nope"); code != http.StatusNotFound {
		t.Errorf("/inspect of an unknown pool: %d", code)
	}
	if code, body := get(t, base+"/healthz"); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Fatalf("/healthz: %d %s", code, body)
	}

	// A failed pool turns the health check red and is counted.
	for range 2 {
		old := killWorker(t, rt, "p", 0)
		waitFor(t, "a restart or the pool failing", 20*time.Second, func() bool {
			h := health(t, rt, "p")
			return h.Failed || (h.Workers[0].Ready && h.Workers[0].Pid != old)
		})
	}
	code, body = get(t, base+"/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "restart intensity exceeded") {
		t.Fatalf("/healthz of a failed pool: %d %s", code, body)
	}
	_, metrics = get(t, base+"/metrics")
	for _, want := range []string{`snakepit_pool_failed{pool="p"} 1`, `snakepit_worker_crashes_total{pool="p"} 2`,
		`snakepit_restart_intensity_exceeded_total{pool="p"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	if err := rt.Stop(callCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("the admin endpoint still answers after Stop")
	}
}

func TestAdminAddrIsValidated(t *testing.T) {
	err := snakepit.Config{Pools: []snakepit.PoolConfig{{Name: "p", Adapter: "m"}}, AdminAddr: "9464"}.Validate()
	var ce *snakepit.ConfigError
	if !errors.As(err, &ce) || ce.Fields[0].Path != "admin_addr" {
		t.Fatalf("got %v", err)
	}
}
