package harness

import (
	"os"
	"testing"
)

func TestSumMemoryAndMinorFaultsOfSelf(t *testing.T) {
	pid := os.Getpid()
	one, err := SumMemory([]int{pid})
	if err != nil {
		t.Fatal(err)
	}
	if one.RSS <= 0 || one.PSS <= 0 || one.USS <= 0 || one.USS > one.RSS {
		t.Fatalf("implausible memory of this process: %+v", one)
	}
	two, err := SumMemory([]int{pid, pid})
	if err != nil {
		t.Fatal(err)
	}
	if two.RSS < one.RSS {
		t.Fatalf("the sum over the same pid twice (%+v) is less than once (%+v)", two, one)
	}
	f0, err := MinorFaults([]int{pid})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	f1, err := MinorFaults([]int{pid})
	if err != nil {
		t.Fatal(err)
	}
	if f0 <= 0 || f1 < f0 {
		t.Fatalf("minor faults before %d, after touching 4 MiB %d", f0, f1)
	}
	if _, err := MinorFaults([]int{-1}); err == nil {
		t.Fatal("MinorFaults of pid -1 did not fail")
	}
}
