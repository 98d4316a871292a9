//go:build !linux

package pyworker

import "errors"

// ReadMemory is not implemented off Linux: it needs /proc/<pid>/smaps_rollup.
func ReadMemory(pid int) (Memory, error) {
	return Memory{}, errors.New("pyworker: reading a process's memory needs Linux /proc")
}
