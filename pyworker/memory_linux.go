package pyworker

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

var pageSize = uint64(os.Getpagesize())

// ResidentBytes is the resident memory (RSS) of process pid, read from
// /proc/<pid>/statm: the Python process itself, which is what leaks.
func ResidentBytes(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0, err
	}
	fields := bytes.Fields(b)
	if len(fields) < 2 {
		return 0, fmt.Errorf("pyworker: /proc/%d/statm: unexpected %q", pid, b)
	}
	pages, err := strconv.ParseUint(string(fields[1]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("pyworker: /proc/%d/statm: %w", pid, err)
	}
	return pages * pageSize, nil
}
