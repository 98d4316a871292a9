package harness

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/snakepit-go/snakepit/bench/floor"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// every mainstream Linux configuration).
const userHZ = 100

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
	ticks, err := sumStatFields(pids, 11, 12) // utime, stime
	return time.Duration(ticks) * time.Second / userHZ, err
}

// sumStatFields adds up the given fields of /proc/<pid>/stat over pids,
// counting fields after "(comm)" from 0 (0 is the state).
func sumStatFields(pids []int, fields ...int) (int64, error) {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return 0, err
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		for _, i := range fields {
			if i >= len(f) {
				return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
			}
			n, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
			}
			sum += n
		}
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
