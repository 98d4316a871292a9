//go:build !linux

package pyworker

import "errors"

// ResidentBytes is not implemented off Linux: memory recycling needs /proc.
func ResidentBytes(pid int) (uint64, error) {
	return 0, errors.New("pyworker: reading a process's memory needs Linux /proc")
}
