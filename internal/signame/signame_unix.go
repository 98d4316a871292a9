//go:build unix

package signame

import (
	"syscall"

	"golang.org/x/sys/unix"
)

func platformName(sig syscall.Signal) string { return unix.SignalName(sig) }
