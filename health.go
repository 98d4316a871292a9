package snakepit

import (
	"context"
	"fmt"

	"github.com/snakepit-go/snakepit/actors"
)

// PoolHealth is the state of one pool.
type PoolHealth struct {
	Name string
	// Size is the configured number of workers; Ready of them take calls now.
	Size, Ready int
	// Queued calls wait for a worker; InFlight calls run on one.
	Queued, InFlight int
	// Failed is true once the pool gave up (restart intensity exceeded, or a
	// worker could not boot); Reason says why. A failed pool refuses calls
	// with ErrPoolUnavailable until the runtime is started again.
	Failed bool
	Reason string
	// Profile is the profile the workers run ("process" or "thread"; auto
	// has been resolved).
	Profile string
	// QueueSize is the bound of the queue.
	QueueSize int
	// NoFreeCapacity counts calls that found every worker at capacity and
	// waited in the queue; Saturated counts calls refused with
	// ErrPoolSaturated. Both count since the runtime started.
	NoFreeCapacity, Saturated int64
	// Workers, in order.
	Workers []WorkerHealth
}

// WorkerHealth is the state of one worker as its pool sees it.
type WorkerHealth struct {
	ID       string // "<pool>-<n>"
	Pid      int    // OS pid of its current Python process (0 before the first start)
	Ready    bool
	Capacity int // calls it runs at once
	Load     int // calls it runs now
	Restarts int // restarts since the runtime started
	// AtCapacity counts the calls that filled the worker to its capacity.
	AtCapacity int64
}

// Health reports every pool, in Config order.
func (rt *Runtime) Health(ctx context.Context) ([]PoolHealth, error) {
	if rt.stopping.Load() {
		return nil, fmt.Errorf("snakepit: health: %w", ErrStopped)
	}
	out := make([]PoolHealth, 0, len(rt.names))
	for _, name := range rt.names {
		r, err := rt.ask(ctx, rt.pools[name], &actors.StatusRequest{})
		if err != nil {
			return nil, fmt.Errorf("snakepit: health of pool %q: %w", name, err)
		}
		out = append(out, poolHealth(r.(*actors.PoolStatus)))
	}
	return out, nil
}

func poolHealth(s *actors.PoolStatus) PoolHealth {
	h := PoolHealth{Name: s.Name, Size: s.Size, Ready: s.Ready, Queued: s.Queued, InFlight: s.InFlight,
		Failed: s.Failed, Reason: s.Reason, Profile: s.Profile, QueueSize: s.QueueSize,
		NoFreeCapacity: s.NoFreeCapacity, Saturated: s.Saturated}
	for _, w := range s.Workers {
		h.Workers = append(h.Workers, WorkerHealth{ID: w.ID, Pid: w.Pid, Ready: w.Ready, Capacity: w.Capacity, Load: w.Load, Restarts: w.Restarts, AtCapacity: w.AtCapacity})
	}
	return h
}
