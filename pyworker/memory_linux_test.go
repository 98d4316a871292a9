package pyworker

import (
	"os"
	"runtime"
	"testing"
)

func TestResidentBytesGrowsWithTouchedMemory(t *testing.T) {
	before, err := ResidentBytes(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	after, err := ResidentBytes(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(buf)
	if after < before+48<<20 {
		t.Fatalf("RSS went from %d to %d after touching 64 MiB", before, after)
	}
	if _, err := ResidentBytes(1 << 30); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}
