package harness

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/snakepit-go/snakepit/bench/floor"
	"github.com/snakepit-go/snakepit/pyworker"
)

// SelfCPU is the user+system CPU time this process has used.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ProcessCPU is the user+system CPU time the processes pids have used, read
// from /proc (10 ms resolution).
func ProcessCPU(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		st, err := pyworker.ReadStat(pid)
		if err != nil {
			return 0, err
		}
		sum += st.CPU()
	}
	return sum, nil
}

// RuntimePids are the OS pids of the workers of a runtime pool.
func (e *Env) RuntimePids(ctx context.Context, pool string) ([]int, error) {
	hs, err := e.Runtime.Health(ctx)
	if err != nil {
		return nil, err
	}
	for _, h := range hs {
		if h.Name != pool {
			continue
		}
		var pids []int
		for _, w := range h.Workers {
			pids = append(pids, w.Pid)
		}
		return pids, nil
	}
	return nil, fmt.Errorf("no pool %q", pool)
}

// RawPids are the OS pids of the first n raw workers.
func (e *Env) RawPids(n int) []int {
	pids := make([]int, n)
	for i, w := range e.Raw[:n] {
		pids[i] = w.handle.Pid()
	}
	return pids
}

// FloorPids are the OS pids of the first n floor servers of mode m.
func (e *Env) FloorPids(m floor.Mode, n int) []int {
	pids := make([]int, n)
	for i, s := range e.Floor[m][:n] {
		pids[i] = s.Pid()
	}
	return pids
}
