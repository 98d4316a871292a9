package pyworker

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

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
	return rep, errors.Join(errs...)
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
