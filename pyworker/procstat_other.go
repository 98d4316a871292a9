//go:build !linux

package pyworker

import (
	"errors"
	"time"
)

// ProcStat is what the runtime reads from /proc/<pid>/stat (Linux only).
type ProcStat struct {
	State                               byte
	MinorFaults, UserTicks, SystemTicks uint64
	Pgrp                                int
	Start                               uint64
}

// CPU is the user+system CPU time the process has used.
func (s ProcStat) CPU() time.Duration { return 0 }

// ReadStat is not implemented off Linux.
func ReadStat(pid int) (ProcStat, error) {
	return ProcStat{}, errors.New("pyworker: /proc/<pid>/stat needs Linux")
}
