package snakepit_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/telemetry"
)

// eventLog records every event a runtime publishes, from its start.
type eventLog struct {
	mu     sync.Mutex
	events []telemetry.Event
}

func (l *eventLog) add(e telemetry.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

// named returns the events called name, in order.
func (l *eventLog) named(name string) []telemetry.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []telemetry.Event
	for _, e := range l.events {
		if e.EventName() == name {
			out = append(out, e)
		}
	}
	return out
}

func (l *eventLog) await(t *testing.T, name string, n int) []telemetry.Event {
	t.Helper()
	waitFor(t, "event "+name, 30*time.Second, func() bool { return len(l.named(name)) >= n })
	return l.named(name)
}

func startLogged(t *testing.T, pools ...snakepit.PoolConfig) (*snakepit.Runtime, *eventLog, error) {
	t.Helper()
	log, _ := testLogger(t)
	events := &eventLog{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rt, err := snakepit.Start(ctx, snakepit.Config{Pools: pools, Logger: log, OnEvent: events.add})
	return rt, events, err
}

// TestEveryTransitionPublishesItsEvent walks a pool through its life and
// checks each transition's event and its fields.
func TestEveryTransitionPublishesItsEvent(t *testing.T) {
	p := pool(t, "p", "echo_tools", 1)
	p.QueueSize = 1
	rt, ev, err := startLogged(t, p)
	if err != nil {
		t.Fatal(err)
	}
	ready := ev.await(t, "worker.ready", 1)[0].(telemetry.WorkerReady)
	if started := ev.named("worker.started"); len(started) != 1 || ready.Pid == 0 || ready.Boot <= 0 || ready.Capacity != 1 {
		t.Fatalf("start: %v, ready %+v", started, ready)
	}

	// Calls and their outcomes; each fills the worker's capacity of 1.
	if _, err := rt.Call(callCtx(t), "p", "echo", nil); err != nil {
		t.Fatal(err)
	}
	_, _ = rt.Call(callCtx(t), "p", "raise_error", map[string]any{"message": "x"})
	_, _ = rt.Call(callCtx(t), "p", "nope", nil)
	got := map[string]bool{}
	for _, e := range ev.await(t, "request.executed", 3) {
		r := e.(telemetry.RequestExecuted)
		if r.Pool != "p" || r.Worker != "p-0" || r.Duration <= 0 {
			t.Errorf("request event: %+v", r)
		}
		got[r.Tool+"="+r.Outcome] = true
	}
	for _, want := range []string{"echo=ok", "raise_error=python_error", "nope=unknown_tool"} {
		if !got[want] {
			t.Errorf("no request.executed %s in %v", want, got)
		}
	}
	if c := ev.await(t, "pool.capacity_reached", 3)[0].(telemetry.CapacityReached); c.Capacity != 1 || c.Load != 1 {
		t.Errorf("capacity event: %+v", c)
	}

	// A full queue, and a queued call whose deadline passes.
	slow := make(chan error, 1)
	go func() {
		_, err := rt.Call(callCtx(t), "p", "sleep", map[string]any{"seconds": 0.5})
		slow <- err
	}()
	waitFor(t, "the slow call to run", 10*time.Second, func() bool { return health(t, rt, "p").InFlight == 1 })
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	queued := make(chan error, 1)
	go func() {
		_, err := rt.Call(short, "p", "echo", nil)
		queued <- err
	}()
	waitFor(t, "a call to queue", 10*time.Second, func() bool { return health(t, rt, "p").Queued == 1 })
	if _, err := rt.Call(callCtx(t), "p", "echo", nil); !errors.Is(err, snakepit.ErrPoolSaturated) {
		t.Fatalf("third call: %v", err)
	}
	if s := ev.await(t, "pool.saturated", 1)[0].(telemetry.PoolSaturated); s.Limit != 1 || s.Queued != 1 || s.Tool != "echo" {
		t.Errorf("saturated event: %+v", s)
	}
	<-queued
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if q := ev.await(t, "pool.queue_timeout", 1)[0].(telemetry.QueueTimeout); q.Waited < 50*time.Millisecond {
		t.Errorf("queue timeout event: %+v", q)
	}

	// A crash and its restart.
	pid := killWorker(t, rt, "p", 0)
	c := ev.await(t, "worker.crashed", 1)[0].(telemetry.WorkerCrashed)
	if c.Pid != pid || c.Signal != 9 || c.Exit != "crashed: signal 9 (SIGKILL)" || c.Uptime <= 0 {
		t.Errorf("crash event: %+v", c)
	}
	if r := ev.await(t, "worker.restarted", 1)[0].(telemetry.WorkerRestarted); r.Worker != "p-0" || r.Restarts != 1 {
		t.Errorf("restart event: %+v", r)
	}
	ev.await(t, "worker.ready", 2)

	// A recycle, then Stop.
	if err := rt.Recycle(callCtx(t), "p", "p-0"); err != nil {
		t.Fatal(err)
	}
	if r := ev.await(t, "worker.recycled", 1)[0].(telemetry.WorkerRecycled); r.Reason != "manual" || r.Replacement != "p-1" {
		t.Errorf("recycle event: %+v", r)
	}
	if s := ev.await(t, "worker.stopped", 1)[0].(telemetry.WorkerStopped); s.Worker != "p-0" || s.Reason != "recycled" {
		t.Errorf("stop event of the recycled worker: %+v", s)
	}
	if err := rt.Stop(callCtx(t)); err != nil {
		t.Fatal(err)
	}
	// OnEvent's last events are delivered before Stop returns.
	stops := ev.named("worker.stopped")
	if last := stops[len(stops)-1].(telemetry.WorkerStopped); last.Worker != "p-1" || last.Reason != "stop" {
		t.Errorf("stop event: %+v", last)
	}
}

// TestPoolFailureEvents: a boot failure and an exceeded restart intensity
// are published, the first one during Start itself.
func TestPoolFailureEvents(t *testing.T) {
	_, ev, err := startLogged(t, pool(t, "b", "broken_import", 1))
	if !errors.Is(err, snakepit.ErrBootFailed) {
		t.Fatalf("Start: %v", err)
	}
	if b := ev.named("pool.boot_failed"); len(b) != 1 || !strings.Contains(b[0].(telemetry.BootFailed).Error, "Error") {
		t.Fatalf("boot failed events: %+v", b)
	}

	p := pool(t, "p", "echo_tools", 1)
	p.Restart = snakepit.RestartPolicy{MaxRestarts: 1, Period: time.Hour, InitialBackoff: time.Millisecond}
	rt, ev, err := startLogged(t, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Stop(context.Background()) })
	old := killWorker(t, rt, "p", 0)
	waitFor(t, "a restart", 20*time.Second, func() bool {
		w := health(t, rt, "p").Workers[0]
		return w.Ready && w.Pid != old
	})
	killWorker(t, rt, "p", 0)
	x := ev.await(t, "pool.restart_intensity_exceeded", 1)[0].(telemetry.RestartIntensityExceeded)
	if x.Period != time.Hour || x.LastExit != "crashed: signal 9 (SIGKILL)" {
		t.Fatalf("intensity event: %+v", x)
	}
}
