package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// PoolHealth is the state of one pool (the root package's PoolHealth, an
// alias of it: a field added here is added there).
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

// WorkerHealth is the state of one worker as its pool sees it (the root
// package's WorkerHealth, an alias of it).
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

// PoolStatus answers StatusRequest: the pool's health, and the actor of
// each of its workers (WorkerPIDs[i] is Workers[i]'s), for the queries the
// runtime sends workers directly (StatsQuery).
type PoolStatus struct {
	PoolHealth
	WorkerPIDs []*actor.PID
}

// status is the pool's snapshot.
func (p *poolActor) status() *PoolStatus {
	h := PoolHealth{Name: p.s.Name, Size: p.s.Size, Ready: p.workers.readyCount(), Queued: len(p.calls.waiting),
		InFlight: len(p.calls.running), Failed: p.failErr != nil, Reason: p.failReason(), Profile: p.s.Profile,
		QueueSize: p.s.QueueSize, NoFreeCapacity: p.calls.noCapacity, Saturated: p.calls.saturated,
		Recycling: p.recycler.underWay + len(p.recycler.pending), Recycles: p.recycler.counts(),
		Requests: p.calls.served, Restarts: p.restarts, LastSaturated: p.calls.lastSaturated, Sessions: len(p.sessions.open)}
	st := &PoolStatus{PoolHealth: h}
	for _, w := range p.workers.list {
		st.Workers = append(st.Workers, w.health())
		st.WorkerPIDs = append(st.WorkerPIDs, w.pid)
	}
	return st
}

// health is w's snapshot.
func (w *worker) health() WorkerHealth {
	u := &w.usage
	h := WorkerHealth{ID: w.slot.id, Pid: w.osPid, Ready: w.ready, Capacity: w.capacity, Load: w.load,
		Restarts: w.restart.count, AtCapacity: u.atCapacity, Requests: u.requests, RSS: u.rss,
		Retiring: w.recycle.retiring, Starting: w.recycle.replaces != nil, LastExit: w.restart.lastExit,
		Busy: w.busyNow(), BootCPU: u.bootCPU, Sessions: w.sessions.bound}
	if w.ready {
		h.Started = u.started
	}
	return h
}
