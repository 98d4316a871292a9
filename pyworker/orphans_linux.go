package pyworker

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

var selfHostID = sync.OnceValues(func() (HostID, error) {
	pid := os.Getpid()
	st, err := ReadStat(pid)
	if err != nil {
		return HostID{}, fmt.Errorf("read this host's start time: %w", err)
	}
	return HostID{Pid: pid, Start: st.Start}, nil
})

// hostAlive reports whether h still runs: its pid exists, is not a zombie,
// and started when h says. When that cannot be told, it answers true: a
// sweep never kills on a doubt.
func hostAlive(h HostID) bool {
	st, err := ReadStat(h.Pid)
	switch {
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH):
		return false
	case err != nil:
		return true
	}
	return st.Start == h.Start && st.State != 'Z' && st.State != 'X'
}

// pidNamespace names this process's pid namespace ("pid:[4026531836]").
var pidNamespace = sync.OnceValues(func() (string, error) { return os.Readlink("/proc/self/ns/pid") })

// readMark reads pid's command line and says whether it is a worker.
func readMark(pid int) (workerMark, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(data) == 0 {
		return workerMark{}, false
	}
	return parseWorkerArgs(strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00"))
}

// sameOwnerAndNamespace keeps the sweep to processes of this user in this
// pid namespace: a --host-pid read from another namespace names another
// process here, and would make a live host look dead.
func sameOwnerAndNamespace(pid int) bool {
	dir := "/proc/" + strconv.Itoa(pid)
	fi, err := os.Stat(dir)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) != os.Getuid() {
		return false
	}
	theirs, err1 := os.Readlink(dir + "/ns/pid")
	ours, err2 := pidNamespace()
	return err1 == nil && err2 == nil && theirs == ours
}

// SweepOrphans finds the snakepit workers on this machine whose host is gone
// (its pid is free, a zombie, or now another process with another start
// time) and kills each with its process group. Workers of a live host —
// this one, or any other runtime running now — are never touched. A pid is
// never signalled by number alone: each orphan is pinned by a pidfd, its
// command line read again, and the signal sent through the pidfd.
func SweepOrphans(log hclog.Logger) (SweepReport, error) {
	var rep SweepReport
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return rep, err
	}
	var errs []error
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		mark, ok := readMark(pid)
		if !ok || !sameOwnerAndNamespace(pid) {
			continue
		}
		rep.Workers++
		if hostAlive(mark.Host) {
			rep.Live++
			continue
		}
		killed, err := killOrphan(pid, mark)
		if err != nil {
			errs = append(errs, fmt.Errorf("orphan worker %d (run %s): %w", pid, mark.RunID, err))
		}
		if killed {
			log.Debug("killed an orphaned worker", "pid", pid, "run_id", mark.RunID,
				"host_pid", mark.Host.Pid, "host_start", mark.Host.Start)
			rep.Killed = append(rep.Killed, pid)
		}
	}
	rep.Descendants, err = killDeadHostsDescendants()
	return rep, errors.Join(append(errs, err)...)
}

// killDeadHostsDescendants kills the processes of this user, in this pid
// namespace, whose process mark names a host that is gone: what the tools
// of a dead host's workers started (the workers themselves died with the
// host, their children did not). Neither this process nor its ancestors
// are ever killed, whatever they carry.
func killDeadHostsDescendants() ([]int, error) {
	spare := ancestors()
	return killMarked(func(pid int, mark string) bool {
		m, ok := parseProcessMark(mark)
		return ok && m.Host.Pid > 0 && !spare[pid] && sameOwnerAndNamespace(pid) && !hostAlive(m.Host)
	})
}

// ancestors are this process and its parents up to pid 1.
func ancestors() map[int]bool {
	out := map[int]bool{}
	for pid := os.Getpid(); pid > 1 && !out[pid]; {
		out[pid] = true
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		i := bytes.LastIndexByte(data, ')')
		if err != nil || i < 0 {
			break
		}
		f := strings.Fields(string(data[i+1:])) // f[0] is field 3, f[1] the parent
		if len(f) < 2 {
			break
		}
		pid, _ = strconv.Atoi(f[1])
	}
	return out
}

// killEscaped kills the processes that still carry the mark of a worker
// that has exited: its descendants that left its process group (setsid,
// setpgid), which the group kill did not reach. Best effort: errors are
// dropped (a process of another user that inherited the mark, one that
// exits meanwhile).
func killEscaped(mark string) {
	if mark == "" {
		return
	}
	_, _ = killMarked(func(_ int, m string) bool { return m == mark })
}

// markPasses bounds the scans of killMarked: each pass stops what it finds
// before killing it, so only children forked before a stop are left for
// the next one.
const markPasses = 8

// killMarked sends SIGKILL to every process whose environment carries a
// process mark match accepts, in passes until one finds none. Each is
// pinned by a pidfd, its mark read again (its pid may have been reused),
// and stopped before it is killed: a stopped process forks no more. Each
// pass waits (up to markKillWait) until what it killed has exited. It
// returns the pids killed.
func killMarked(match func(pid int, mark string) bool) ([]int, error) {
	var killed []int
	var errs []error
	for pass := 0; pass < markPasses; pass++ {
		found, err := stopMarked(match)
		errs = append(errs, err)
		if len(found) == 0 {
			break
		}
		for _, p := range found {
			if err := unix.PidfdSendSignal(p.fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("kill %d: %w", p.pid, err))
			} else if !slices.Contains(killed, p.pid) {
				killed = append(killed, p.pid)
			}
		}
		awaitPidfds(found, time.Now().Add(markKillWait))
	}
	return killed, errors.Join(errs...)
}

// markKillWait bounds the wait of one killMarked pass for its kills.
const markKillWait = time.Second

// awaitPidfds waits until every pinned process has exited (its pidfd is
// readable) or the deadline passes, then closes the pidfds.
func awaitPidfds(procs []pinnedProc, deadline time.Time) {
	for _, p := range procs {
		for {
			fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
			_, err := unix.Poll(fds, int(max(0, time.Until(deadline).Milliseconds())))
			if err != unix.EINTR {
				break
			}
		}
		_ = unix.Close(p.fd)
	}
}

type pinnedProc struct{ pid, fd int }

// stopMarked scans /proc once and stops (SIGSTOP) every live process whose
// mark match accepts, returning each with its pidfd.
func stopMarked(match func(pid int, mark string) bool) ([]pinnedProc, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var found []pinnedProc
	var errs []error
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		mark, ok := readProcessMark(pid)
		if !ok || !match(pid, mark) {
			continue
		}
		p, err := pinMarked(pid, mark)
		if err != nil {
			errs = append(errs, fmt.Errorf("process %d (mark %s): %w", pid, mark, err))
		} else if p.fd >= 0 {
			found = append(found, p)
		}
	}
	return found, errors.Join(errs...)
}

// pinMarked opens a pidfd on pid, checks it still carries mark, and stops
// it. fd is -1 when it is gone or no longer the process that was read.
func pinMarked(pid int, mark string) (pinnedProc, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return pinnedProc{fd: -1}, ignoreGone(err)
	}
	if again, ok := readProcessMark(pid); !ok || again != mark {
		_ = unix.Close(fd)
		return pinnedProc{fd: -1}, nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGSTOP, nil, 0); err != nil {
		_ = unix.Close(fd)
		return pinnedProc{fd: -1}, ignoreGone(err)
	}
	return pinnedProc{pid: pid, fd: fd}, nil
}

// readProcessMark reads the process mark in pid's environment, as it was
// when pid last ran exec (what /proc/<pid>/environ shows). A zombie, or a
// process whose environment cannot be read (another user's), has none.
func readProcessMark(pid int) (string, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return "", false
	}
	return markIn(data)
}

// killOrphan kills the worker pid, if it is still the one described by want,
// and its process group. It reports whether it sent the kill.
func killOrphan(pid int, want workerMark) (bool, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false, ignoreGone(err)
	}
	defer unix.Close(fd)
	// From here a signal through fd reaches this process or nobody. Is it
	// still the worker (the pid may have been reused since the scan)?
	if mark, ok := readMark(pid); !ok || mark != want {
		return false, nil
	}
	// Stopped, it cannot exit by itself: its pid, and the group id it leads,
	// stay its own while the group is killed.
	if err := unix.PidfdSendSignal(fd, unix.SIGSTOP, nil, 0); err != nil {
		return false, ignoreGone(err)
	}
	var groupErr error
	st, err := ReadStat(pid)
	if err == nil && st.Pgrp == pid && unix.PidfdSendSignal(fd, 0, nil, 0) == nil {
		if err := unix.Kill(-pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			groupErr = fmt.Errorf("kill its process group: %w", err)
		}
	}
	// Whatever became of the group, the stopped worker itself must not stay.
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return false, errors.Join(groupErr, err)
	}
	return true, groupErr
}

// ignoreGone turns "no such process" into success: the orphan went first.
func ignoreGone(err error) error {
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}
