package pyworker

import (
	"os"
	"testing"
	"time"
)

func TestReadStatOfThisProcess(t *testing.T) {
	before, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.State < 'A' || after.State > 'Z' || after.Start != before.Start || after.Start == 0 || after.MinorFaults == 0 {
		t.Fatalf("stat: %+v", after)
	}
	if after.CPU() <= before.CPU() {
		t.Fatalf("CPU went from %s to %s over 50 ms of spinning", before.CPU(), after.CPU())
	}
	if _, err := ReadStat(1 << 30); err == nil {
		t.Fatal("no error for a pid that cannot exist")
	}
}
