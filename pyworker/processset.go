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
	procs map[Process]<-chan struct{} // each process and when it has ended
}

// NewProcessSet returns an empty set.
func NewProcessSet() *ProcessSet { return &ProcessSet{procs: map[Process]<-chan struct{}{}} }

// add tracks p until ended is closed (nil: until p is reaped). Launch closes
// it once p is reaped and its output has been read to the end; by then the
// reaper has killed what p left running (see osProcess.reap).
func (s *ProcessSet) add(p Process, ended <-chan struct{}) {
	if ended == nil {
		ended = p.Done()
	}
	s.mu.Lock()
	s.procs[p] = ended
	s.mu.Unlock()
	go func() {
		<-ended
		s.mu.Lock()
		delete(s.procs, p)
		s.mu.Unlock()
	}()
}

// snapshot returns the processes not yet reaped, and the ended channels of
// those not yet ended.
func (s *ProcessSet) snapshot() ([]Process, []<-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	live := make([]Process, 0, len(s.procs))
	var pending []<-chan struct{}
	for p, ended := range s.procs {
		select {
		case <-ended: // its goroutine is about to remove it
			continue
		default:
			pending = append(pending, ended)
		}
		select {
		case <-p.Done():
		default:
			live = append(live, p)
		}
	}
	return live, pending
}

// Len is the number of processes not yet reaped.
func (s *ProcessSet) Len() int {
	live, _ := s.snapshot()
	return len(live)
}

// KillAll sends SIGKILL to the process group of every live process.
func (s *ProcessSet) KillAll() {
	live, _ := s.snapshot()
	for _, p := range live {
		_ = p.SignalGroup(syscall.SIGKILL)
	}
}

// Wait returns once every process in the set has been reaped (and, for a
// worker, its last output logged), or ctx ends.
func (s *ProcessSet) Wait(ctx context.Context) error {
	for {
		_, pending := s.snapshot()
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-pending[0]:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
