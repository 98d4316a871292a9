package snakepit

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/snakepit-go/snakepit/pyworker"
	"github.com/snakepit-go/snakepit/telemetry"
)

// Inspect reports every pool, in Config order: its workers (pid, load,
// uptime, calls served, restarts, RSS and PSS read from /proc), its Python
// (version, free-threading, GIL), how saturated it is, and the inspector's
// recommendations (docs/inspector.md). A pool whose workers cannot answer
// the stats query is still reported, with PoolReport.Incomplete saying why.
func (rt *Runtime) Inspect(ctx context.Context) (telemetry.Report, error) {
	hs, err := rt.Health(ctx)
	if err != nil {
		return telemetry.Report{}, fmt.Errorf("snakepit: inspect: %w", err)
	}
	rep := telemetry.Report{Time: time.Now(), Pools: make([]telemetry.PoolReport, 0, len(hs))}
	for _, h := range hs {
		p, err := rt.inspectPool(ctx, h, rep.Time)
		if err != nil {
			return telemetry.Report{}, err
		}
		rep.Pools = append(rep.Pools, p)
	}
	return rep, nil
}

// inspectPool turns one pool's health into its report, adds the workers'
// Python facts and memory, and runs the inspector's checks.
func (rt *Runtime) inspectPool(ctx context.Context, h PoolHealth, now time.Time) (telemetry.PoolReport, error) {
	p := poolReport(h, now)
	p.Uptime = now.Sub(rt.started)
	if !h.LastSaturated.IsZero() {
		ago := now.Sub(h.LastSaturated).Seconds()
		p.RefusedSecondsAgo = &ago
	}
	if h.Ready > 0 {
		stats, err := rt.Stats(ctx, h.Name)
		if ctx.Err() != nil {
			return p, fmt.Errorf("snakepit: inspect pool %q: %w", h.Name, ctx.Err())
		}
		if err != nil {
			p.Incomplete = "python facts unavailable: " + err.Error()
		}
		addPythonFacts(&p, stats)
	} else {
		p.Incomplete = "no ready worker to ask for python facts"
	}
	addMemory(&p)
	p.CallCPUFraction = callCPUFraction(h)
	return telemetry.Complete(p, telemetry.Thresholds{}, nil), nil
}

func poolReport(h PoolHealth, now time.Time) telemetry.PoolReport {
	p := telemetry.PoolReport{Name: h.Name, Profile: h.Profile, Size: h.Size, Ready: h.Ready, Failed: h.Failed,
		FailReason: h.Reason, Queued: h.Queued, QueueSize: h.QueueSize, NoFreeCapacity: h.NoFreeCapacity,
		Saturated: h.Saturated, Recycles: map[string]int64{}, Requests: h.Requests, Restarts: h.Restarts, Sessions: h.Sessions}
	for k, v := range h.Recycles {
		p.Recycles[k] = v
	}
	for _, w := range h.Workers {
		var up time.Duration
		if !w.Started.IsZero() {
			up = now.Sub(w.Started)
		}
		p.Workers = append(p.Workers, telemetry.WorkerReport{ID: w.ID, Pid: w.Pid, Ready: w.Ready, Capacity: w.Capacity,
			Load: w.Load, Uptime: up, Requests: w.Requests, Restarts: w.Restarts, Sessions: w.Sessions, RSS: w.RSS, LastExit: w.LastExit,
			Retiring: w.Retiring, Starting: w.Starting})
	}
	return p
}

// addPythonFacts sets the pool's Python version ("3.11.2"; versions joined
// with "," should workers differ), FreeThreaded when any worker runs a
// free-threaded build and GILEnabled when any runs with its GIL on.
func addPythonFacts(p *telemetry.PoolReport, stats []WorkerStats) {
	var versions []string
	for _, s := range stats {
		if s.Python != "" && !slices.Contains(versions, s.Python) {
			versions = append(versions, s.Python)
		}
		p.FreeThreaded = p.FreeThreaded || s.FreeThreaded
		p.GILEnabled = p.GILEnabled || s.GILEnabled
		if s.GILEnabledBy != "" && p.GILEnabledBy == "" {
			p.GILEnabledBy, p.GILEnabledWhen = s.GILEnabledBy, s.GILEnabledWhen
		}
	}
	p.Python = strings.Join(versions, ",")
}

// addMemory reads each running worker's RSS and PSS from /proc. A fresh
// reading replaces the RSS of the last lifecycle check; where /proc cannot
// be read (the process just exited, or not Linux) that RSS stays.
func addMemory(p *telemetry.PoolReport) {
	for i := range p.Workers {
		w := &p.Workers[i]
		if w.Pid <= 0 {
			continue
		}
		m, err := pyworker.ReadMemory(w.Pid)
		if err != nil {
			continue
		}
		w.RSS, w.PSS = m.RSS, m.PSS
	}
}

// minBusyForCPU is how long a pool's workers must have run calls before
// their CPU share says anything (CPU time is counted in 10 ms ticks).
const minBusyForCPU = time.Second

// callCPUFraction is the CPU time the pool's worker processes used since
// they became ready, per second they had a call running: about 1 for
// CPU-bound Python under a GIL (whatever the thread count), far below 1 for
// I/O-bound calls, above 1 for threads running in parallel. Nil until the
// workers were busy for minBusyForCPU.
func callCPUFraction(h PoolHealth) *float64 {
	var cpu, busy time.Duration
	for _, w := range h.Workers {
		if !w.Ready || w.Pid <= 0 {
			continue
		}
		st, err := pyworker.ReadStat(w.Pid)
		if err != nil {
			continue
		}
		cpu += max(st.CPU()-w.BootCPU, 0)
		busy += w.Busy
	}
	if busy < minBusyForCPU {
		return nil
	}
	f := cpu.Seconds() / busy.Seconds()
	return &f
}
