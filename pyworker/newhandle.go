package pyworker

import (
	"time"

	"github.com/hashicorp/go-hclog"
)

// NewHandle makes a Handle for a process started and connected by other
// means than Launch: a launcher of one's own, or a test's fake process and
// connection. It has no output (StderrTail is empty) and no stack file
// (DumpStacks returns ""); Stop and Kill work through proc and conn.
func NewHandle(proc Process, conn Conn) *Handle {
	h := &Handle{Proc: proc, Conn: conn, stderr: &stderrLogger{log: hclog.NewNullLogger()}, began: time.Now()}
	h.stdoutOut, h.stderrOut = newOutputStream(nil), newOutputStream(nil)
	close(h.stdoutOut.done) // nothing to read
	close(h.stderrOut.done)
	return h
}
