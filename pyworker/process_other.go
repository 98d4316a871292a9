//go:build !linux

package pyworker

import (
	"os/exec"
	"syscall"
)

// Outside Linux there is no parent-death signal; the worker still exits when
// its stdin (held by the parent) reaches EOF.
func spawn(cmd *exec.Cmd) error { return cmd.Start() }

func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func signalGroup(pid int, sig syscall.Signal) error {
	err := syscall.Kill(-pid, sig)
	if err == syscall.ESRCH {
		return nil
	}
	return err
}

// awaitExit reports false: outside Linux the group is not killed after its
// leader's exit (a reaped leader's group id may already be someone else's,
// and the exit is not waited for without reaping it here).
func awaitExit(int) bool { return false }
