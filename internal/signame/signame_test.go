package signame

import (
	"syscall"
	"testing"
)

func TestName(t *testing.T) {
	for sig, want := range map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGSEGV: "SIGSEGV", syscall.SIGTERM: "SIGTERM"} {
		if got := Name(sig); got != want {
			t.Errorf("Name(%d) = %q, want %q", int(sig), got, want)
		}
	}
	if got := Name(syscall.Signal(200)); got == "" {
		t.Error("an unknown signal has no description")
	}
}
