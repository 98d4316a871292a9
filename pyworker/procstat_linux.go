package pyworker

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the times in /proc/<pid>/stat (USER_HZ, 100 on
// every mainstream Linux configuration).
const userHZ = 100

// ProcStat is what the runtime reads from /proc/<pid>/stat.
type ProcStat struct {
	State       byte   // field 3: R, S, D, Z, X, ...
	MinorFaults uint64 // field 10
	UserTicks   uint64 // field 14, in USER_HZ ticks
	SystemTicks uint64 // field 15
	Pgrp        int    // field 5
	Start       uint64 // field 22, clock ticks after boot
}

// CPU is the user+system CPU time the process has used (10 ms resolution).
func (s ProcStat) CPU() time.Duration {
	return time.Duration(s.UserTicks+s.SystemTicks) * time.Second / userHZ
}

// ReadStat parses /proc/<pid>/stat. The command name (field 2) is in
// parentheses and may hold spaces and ')', so fields are counted from the
// last ')'.
func ReadStat(pid int) (ProcStat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ProcStat{}, err
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:])) // f[0] is field 3
	if len(f) < 20 || len(f[0]) != 1 {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	num := func(field int) (uint64, error) { return strconv.ParseUint(f[field-3], 10, 64) }
	minflt, err1 := num(10)
	utime, err2 := num(14)
	stime, err3 := num(15)
	start, err4 := num(22)
	pgrp, err5 := strconv.Atoi(f[2])
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return ProcStat{State: f[0][0], MinorFaults: minflt, UserTicks: utime, SystemTicks: stime, Pgrp: pgrp, Start: start}, nil
}
