package snakepit

import (
	"context"
	"fmt"
	"time"

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
	// Recycling counts the recycles queued or under way; Recycles counts
	// those done since the runtime started, by reason ("age", "requests",
	// "memory", "memory-hard-limit", "manual", "profile").
	Recycling int
	Recycles  map[string]int64
	// Requests counts the calls the pool's workers served, and Restarts the
	// restarts of its workers, since the runtime started, counting workers
	// since replaced by a recycle.
	Requests int64
	Restarts int
	// LastSaturated is when a call was last refused with ErrPoolSaturated
	// (zero: never).
	LastSaturated time.Time
	// Sessions counts the sessions open (Runtime.OpenSession), lost ones
	// included until they expire.
	Sessions int
	// Workers: the Size members in order, then any worker retiring after a
	// recycle and any replacement still starting.
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
	// Started is when its current process became ready (zero before);
	// Requests counts the calls that process served; RSS is its resident
	// memory in bytes at the last lifecycle check (0 unless
	// RecyclePolicy.MaxMemory or HardMemoryLimit is set).
	Started  time.Time
	Requests int64
	RSS      uint64
	// Retiring: recycled, finishing its calls before it stops; it takes no
	// new call. Starting: a replacement that is not ready yet.
	Retiring, Starting bool
	// Busy is how long its current process has had at least one call
	// running; BootCPU is the CPU time that process used to start (the
	// interpreter and the adapter's import).
	Busy, BootCPU time.Duration
	// LastExit says how its last process ended, e.g. "crashed: signal 9
	// (SIGKILL)" or "killed by the runtime (...): it failed 2 health
	// checks..."; "" while its first process runs.
	LastExit string
	// Sessions counts the sessions bound to its current process.
	Sessions int
}

// Health reports every pool, in Config order.
func (rt *Runtime) Health(ctx context.Context) ([]PoolHealth, error) {
	if rt.stopping.Load() {
		return nil, fmt.Errorf("snakepit: health: %w: Stop was called; start a new Runtime with snakepit.Start", ErrStopped)
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
		NoFreeCapacity: s.NoFreeCapacity, Saturated: s.Saturated, Recycling: s.Recycling, Recycles: s.Recycles,
		Requests: s.Requests, Restarts: s.Restarts, LastSaturated: s.LastSaturated, Sessions: s.Sessions}
	for _, w := range s.Workers {
		h.Workers = append(h.Workers, WorkerHealth{ID: w.ID, Pid: w.Pid, Ready: w.Ready, Capacity: w.Capacity, Load: w.Load,
			Restarts: w.Restarts, AtCapacity: w.AtCapacity, Started: w.Started, Requests: w.Requests, RSS: w.RSS,
			Retiring: w.Retiring, Starting: w.Starting, LastExit: w.LastExit,
			Busy: w.Busy, BootCPU: w.BootCPU, Sessions: w.Sessions})
	}
	return h
}
