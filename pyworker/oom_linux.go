package pyworker

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// cgroupRoot is where the cgroup v2 hierarchy is mounted.
const cgroupRoot = "/sys/fs/cgroup"

// oomWatch remembers the file of a process's memory cgroup and its oom_kill
// counter at start, to tell after a SIGKILL whether the kernel's
// out-of-memory killer struck in that cgroup meanwhile.
type oomWatch struct {
	events string // path of memory.events; "" when unknown
	before uint64
	why    string // why it cannot tell, when it cannot
}

func newOOMWatch(pid int) *oomWatch {
	path, err := memoryEventsOf(pid)
	if err != nil {
		return &oomWatch{why: err.Error()}
	}
	n, err := oomKills(path)
	if err != nil {
		return &oomWatch{why: err.Error()}
	}
	return &oomWatch{events: path, before: n}
}

// verdict reads the counter again, after the process died by SIGKILL.
func (w *oomWatch) verdict() OOMVerdict {
	if w == nil || w.events == "" {
		why := "no cgroup v2 memory controller readable"
		if w != nil && w.why != "" {
			why = w.why
		}
		return OOMVerdict{Known: false, Detail: why}
	}
	after, err := oomKills(w.events)
	if err != nil {
		return OOMVerdict{Known: false, Detail: err.Error()}
	}
	if after > w.before {
		return OOMVerdict{Known: true, Killed: true, Detail: fmt.Sprintf(
			"oom_kill of %s went from %d to %d while it ran", w.events, w.before, after)}
	}
	return OOMVerdict{Known: true, Detail: fmt.Sprintf("oom_kill of %s stayed at %d", w.events, after)}
}

// memoryEventsOf finds the file holding the oom_kill counter of pid's
// memory cgroup: memory.events under cgroup v2, memory.oom_control under the
// v1 memory controller (Linux 4.13+ counts oom_kill there too).
func memoryEventsOf(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return "", err
	}
	var tried []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		var path string
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			path = cgroupRoot + rest + "/memory.events"
		} else if _, rest, ok := strings.Cut(line, ":memory:"); ok {
			path = cgroupRoot + "/memory" + rest + "/memory.oom_control"
		} else {
			continue
		}
		if _, err := oomKills(path); err == nil {
			return path, nil
		}
		tried = append(tried, path)
	}
	return "", fmt.Errorf("no readable oom_kill counter for process %d's memory cgroup (tried %s)", pid, strings.Join(tried, ", "))
}

// oomKills reads the oom_kill counter of a memory.events file.
func oomKills(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "oom_kill "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s has no oom_kill line", path)
}
