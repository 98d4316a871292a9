package harness

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/pyworker"
)

// PoolHealth is the health of the named pool of rt.
func PoolHealth(ctx context.Context, rt *snakepit.Runtime, pool string) (snakepit.PoolHealth, error) {
	hs, err := rt.Health(ctx)
	if err != nil {
		return snakepit.PoolHealth{}, err
	}
	for _, h := range hs {
		if h.Name == pool {
			return h, nil
		}
	}
	return snakepit.PoolHealth{}, fmt.Errorf("no pool %q", pool)
}

// PoolPids are the OS pids of the workers of the named pool of rt, in the
// pool's order. It fails when a worker has no process (not started yet, or
// being restarted).
func PoolPids(ctx context.Context, rt *snakepit.Runtime, pool string) ([]int, error) {
	h, err := PoolHealth(ctx, rt, pool)
	if err != nil {
		return nil, err
	}
	pids := make([]int, 0, len(h.Workers))
	for _, w := range h.Workers {
		if w.Pid == 0 {
			return nil, fmt.Errorf("pool %q: worker %s has no process", pool, w.ID)
		}
		pids = append(pids, w.Pid)
	}
	return pids, nil
}

// SumMemory is the sum of ReadMemory over pids. PSS sums meaningfully across
// processes (each shared page is divided among the processes that map it);
// RSS counts a shared page once per process that maps it.
func SumMemory(pids []int) (Memory, error) {
	var sum Memory
	for _, pid := range pids {
		m, err := ReadMemory(pid)
		if err != nil {
			return Memory{}, err
		}
		sum.PSS += m.PSS
		sum.RSS += m.RSS
		sum.USS += m.USS
	}
	return sum, nil
}

// CPUModel is the first "model name" of /proc/cpuinfo.
func CPUModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// Kernel is the running kernel's release.
func Kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// LoadAvg is the 1-minute load average.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// MinorFaults is the number of minor page faults the processes pids have
// taken, read from /proc/<pid>/stat.
func MinorFaults(pids []int) (int64, error) {
	var sum int64
	for _, pid := range pids {
		st, err := pyworker.ReadStat(pid)
		if err != nil {
			return 0, err
		}
		sum += int64(st.MinorFaults)
	}
	return sum, nil
}
