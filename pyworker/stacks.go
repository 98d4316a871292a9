package pyworker

import (
	"os"
	"syscall"
	"time"
)

// stackSettle is how long a stack dump must stop growing to count as done.
const stackSettle = 50 * time.Millisecond

// DumpStacks asks the worker for the Python stacks of all its threads
// (faulthandler, registered on SIGUSR1, writes them to its stack file even
// while a C call holds the GIL) and returns what it wrote within wait; ""
// when it wrote nothing, as a frozen process does. It blocks up to wait:
// call it from a goroutine.
func (h *Handle) DumpStacks(wait time.Duration) string {
	if h.stackFile == "" {
		return ""
	}
	before := fileSize(h.stackFile)
	if err := syscall.Kill(h.Pid(), syscall.SIGUSR1); err != nil {
		return ""
	}
	deadline := time.Now().Add(wait)
	size, stableSince := before, time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		if now := fileSize(h.stackFile); now != size {
			size, stableSince = now, time.Now()
		} else if size > before && time.Since(stableSince) >= stackSettle {
			break
		}
	}
	if size <= before {
		return ""
	}
	f, err := os.Open(h.stackFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, size-before)
	n, _ := f.ReadAt(buf, before)
	return string(buf[:n])
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}
