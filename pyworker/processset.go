package pyworker

import (
	"context"
	"sync"
	"syscall"
)

// ProcessSet tracks every live worker process a runtime started, so that
// stopping the runtime can prove none is left.
type ProcessSet struct {
	mu    sync.Mutex
	procs map[Process]struct{}
}

// NewProcessSet returns an empty set.
func NewProcessSet() *ProcessSet { return &ProcessSet{procs: map[Process]struct{}{}} }

func (s *ProcessSet) add(p Process) {
	s.mu.Lock()
	s.procs[p] = struct{}{}
	s.mu.Unlock()
	go func() {
		<-p.Done()
		s.mu.Lock()
		delete(s.procs, p)
		s.mu.Unlock()
	}()
}

func (s *ProcessSet) snapshot() []Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Process, 0, len(s.procs))
	for p := range s.procs {
		select {
		case <-p.Done(): // reaped; its goroutine is about to remove it
		default:
			out = append(out, p)
		}
	}
	return out
}

// Len is the number of processes not yet reaped.
func (s *ProcessSet) Len() int { return len(s.snapshot()) }

// KillAll sends SIGKILL to the process group of every live process.
func (s *ProcessSet) KillAll() {
	for _, p := range s.snapshot() {
		_ = p.SignalGroup(syscall.SIGKILL)
	}
}

// Wait returns once every process in the set has been reaped, or ctx ends.
func (s *ProcessSet) Wait(ctx context.Context) error {
	for {
		live := s.snapshot()
		if len(live) == 0 {
			return nil
		}
		select {
		case <-live[0].Done():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
