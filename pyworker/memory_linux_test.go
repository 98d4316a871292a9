package pyworker

import (
	"os"
	"syscall"
	"testing"
)

func TestResidentBytesGrowsWithTouchedMemory(t *testing.T) {
	before, err := ResidentBytes(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Fresh pages from the kernel, not the Go heap: heap that earlier tests
	// freed may still be resident and would be reused without growing RSS.
	buf, err := syscall.Mmap(-1, 0, 64<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(buf)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	after, err := ResidentBytes(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after < before+48<<20 {
		t.Fatalf("RSS went from %d to %d after touching 64 MiB", before, after)
	}
	if _, err := ResidentBytes(1 << 30); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}
