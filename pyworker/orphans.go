package pyworker

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// HostID names one host process for good: its pid and its start time (field
// 22 of /proc/<pid>/stat, clock ticks after boot). A pid alone is not enough:
// pids are reused, start times are not.
type HostID struct {
	Pid   int
	Start uint64
}

func (h HostID) String() string { return strconv.Itoa(h.Pid) + " " + strconv.FormatUint(h.Start, 10) }

// workerMark is what a worker's command line says about who started it.
type workerMark struct {
	RunID string
	Host  HostID
}

// The worker's own flags that name its host (pyworker/python/snakepit/worker.py).
const (
	flagRunID     = "--run-id"
	flagHostPid   = "--host-pid"
	flagHostStart = "--host-start"
	workerModule  = "snakepit.worker"
	ownerFileName = "owner"
	runDirPrefix  = "snakepit-"
)

// hostArgs are the flags that tell a worker which host started it; none
// where the host cannot name itself (outside Linux).
func hostArgs() []string {
	self, err := selfHostID()
	if err != nil {
		return nil
	}
	return []string{flagHostPid, strconv.Itoa(self.Pid), flagHostStart, strconv.FormatUint(self.Start, 10)}
}

// parseWorkerArgs recognises a snakepit worker's argv: an interpreter whose
// options are followed by "-m snakepit.worker", then the worker's flags with
// a run id and the host's pid and start time. Anything else is not ours.
func parseWorkerArgs(argv []string) (workerMark, bool) {
	i := 1
	for i < len(argv) && argv[i] != "-m" && strings.HasPrefix(argv[i], "-") {
		i++ // interpreter options such as -u
	}
	if i+1 >= len(argv) || argv[i] != "-m" || argv[i+1] != workerModule {
		return workerMark{}, false
	}
	flags := workerFlags(argv[i+2:])
	pid, errPid := strconv.Atoi(flags[flagHostPid])
	start, errStart := strconv.ParseUint(flags[flagHostStart], 10, 64)
	m := workerMark{RunID: flags[flagRunID], Host: HostID{Pid: pid, Start: start}}
	if m.RunID == "" || errPid != nil || errStart != nil || pid <= 0 || start == 0 {
		return workerMark{}, false
	}
	return m, true
}

// workerFlags reads "--flag value" and "--flag=value" pairs of the flags
// that name the host.
func workerFlags(args []string) map[string]string {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		name, value, inline := strings.Cut(args[i], "=")
		switch name {
		case flagRunID, flagHostPid, flagHostStart:
		default:
			continue
		}
		if !inline && i+1 < len(args) {
			i++
			value = args[i]
		}
		out[name] = value
	}
	return out
}

// WriteOwner records this host's identity in dir's owner file ("<pid>
// <start time> <pid namespace>"), so that a later start's sweep can tell
// whether the host that made dir is gone.
func WriteOwner(dir string) error {
	self, err := selfHostID()
	if err != nil {
		return err
	}
	ns, err := pidNamespace()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ownerFileName), []byte(self.String()+" "+ns+"\n"), 0o600)
}

// readOwner reads dir's owner file. The pid namespace is returned apart: a
// pid is only meaningful in the namespace it was read in.
func readOwner(dir string) (HostID, string, error) {
	data, err := os.ReadFile(filepath.Join(dir, ownerFileName))
	if err != nil {
		return HostID{}, "", err
	}
	var h HostID
	var ns string
	if _, err := fmt.Sscan(string(data), &h.Pid, &h.Start, &ns); err != nil || h.Pid <= 0 || h.Start == 0 {
		return HostID{}, "", fmt.Errorf("malformed owner file in %s: %q", dir, data)
	}
	return h, ns, nil
}

// ownerGone reports whether dir's owner file names a host that is gone. A
// directory without a readable owner file, or made in another pid
// namespace (a RuntimeDir shared between containers), is never judged.
func ownerGone(dir string) (HostID, bool) {
	owner, ns, err := readOwner(dir)
	if err != nil {
		return owner, false
	}
	ours, err := pidNamespace()
	if err != nil || ns != ours {
		return owner, false
	}
	return owner, !hostAlive(owner)
}

// SweepRunDirs removes the private run directories ("snakepit-*") under
// root ("" means os.TempDir()) whose owner file names a host that is gone.
// A directory without a readable owner file is left alone: it may be one
// being made right now, or one from a release that wrote none; so is one
// whose owner lives in another pid namespace.
func SweepRunDirs(root string, log hclog.Logger) ([]string, error) {
	if root == "" {
		root = os.TempDir()
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("sweep %s: %w", root, err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		if !e.IsDir() || !strings.HasPrefix(e.Name(), runDirPrefix) {
			continue
		}
		owner, gone := ownerGone(dir)
		if !gone {
			continue
		}
		if err := os.RemoveAll(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		log.Debug("removed the run directory of a dead host", "dir", dir, "owner_pid", owner.Pid)
		removed = append(removed, dir)
	}
	return removed, errors.Join(errs...)
}

// SweepReport says what a sweep found and did.
type SweepReport struct {
	Workers int   // snakepit worker processes found (all hosts)
	Live    int   // of those, workers of a live host: left alone
	Killed  []int // pids of orphaned workers killed (with their process groups)
	// Descendants are the pids of other processes killed because their
	// environment carries the process mark of a dead host's worker: what
	// its tools started and outlived it (SNAKEPIT_PROCESS_MARK).
	Descendants []int
	Dirs        []string // run directories of dead hosts removed
}

// Sweep kills the orphaned workers of dead hosts (SweepOrphans) and removes
// their run directories under runtimeDir (SweepRunDirs). It is best effort:
// what fails is logged as a warning, and start-up goes on.
func Sweep(runtimeDir string, log hclog.Logger) SweepReport {
	rep, err := SweepOrphans(log)
	if err != nil {
		log.Warn("orphan sweep: some worker processes could not be checked or killed", "error", err)
	}
	if rep.Dirs, err = SweepRunDirs(runtimeDir, log); err != nil {
		log.Warn("orphan sweep: some run directories could not be removed", "error", err)
	}
	level := hclog.Debug
	if len(rep.Killed) > 0 || len(rep.Descendants) > 0 || len(rep.Dirs) > 0 {
		level = hclog.Info
	}
	log.Log(level, "orphan sweep", "killed", len(rep.Killed), "killed_pids", rep.Killed,
		"dirs_removed", len(rep.Dirs), "workers_seen", rep.Workers, "workers_of_live_hosts", rep.Live,
		"descendants_killed", len(rep.Descendants), "descendant_pids", rep.Descendants)
	return rep
}

// envProcessMark is the environment variable that marks every worker process
// and, by inheritance, every process started from it.
const envProcessMark = "SNAKEPIT_PROCESS_MARK"

// processMark names one worker process for good: the runtime's run id, the
// worker's sequence number in its host, and the host's identity. Written
// "<run id>:<seq>:<host pid>:<host start>"; the host is zero outside Linux.
type processMark struct {
	RunID string
	Seq   uint64
	Host  HostID
}

func newProcessMark(runID string, seq uint64) processMark {
	self, _ := selfHostID()
	return processMark{RunID: runID, Seq: seq, Host: self}
}

func (m processMark) String() string {
	return fmt.Sprintf("%s:%d:%d:%d", m.RunID, m.Seq, m.Host.Pid, m.Host.Start)
}

// parseProcessMark reads a mark back; the run id is what precedes the last
// three fields.
func parseProcessMark(v string) (processMark, bool) {
	parts := strings.Split(v, ":")
	n := len(parts)
	if n < 4 {
		return processMark{}, false
	}
	seq, err1 := strconv.ParseUint(parts[n-3], 10, 64)
	pid, err2 := strconv.Atoi(parts[n-2])
	start, err3 := strconv.ParseUint(parts[n-1], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return processMark{}, false
	}
	return processMark{RunID: strings.Join(parts[:n-3], ":"), Seq: seq, Host: HostID{Pid: pid, Start: start}}, true
}

// markIn returns the value of the process mark in a NUL-separated
// environment block (/proc/<pid>/environ).
func markIn(environ []byte) (string, bool) {
	prefix := []byte(envProcessMark + "=")
	for _, kv := range bytes.Split(environ, []byte{0}) {
		if bytes.HasPrefix(kv, prefix) {
			return string(kv[len(prefix):]), true
		}
	}
	return "", false
}
