package pyworker

import (
	"io"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestStderrLevels(t *testing.T) {
	s := &stderrLogger{log: hclog.NewNullLogger()}
	cases := []struct {
		line  string
		level hclog.Level
		msg   string
	}{
		{"INFO snakepit.worker: ready", hclog.Info, "snakepit.worker: ready"},
		{"ERROR tools: failed", hclog.Error, "tools: failed"},
		{"    Traceback (most recent call last):", hclog.Error, "    Traceback (most recent call last):"},
		{"WARNING x: careful", hclog.Warn, "x: careful"},
		{"DEBUG x: detail", hclog.Debug, "x: detail"},
		{"CRITICAL x: dying", hclog.Error, "x: dying"},
		{"Fatal Python error: Segmentation fault", hclog.Warn, "Fatal Python error: Segmentation fault"},
		{"INFORMATION is not a level", hclog.Warn, "INFORMATION is not a level"},
	}
	for _, c := range cases {
		level, msg := s.classify(c.line)
		if level != c.level || msg != c.msg {
			t.Errorf("classify(%q) = %v %q, want %v %q", c.line, level, msg, c.level, c.msg)
		}
	}
}

func TestStderrTailKeepsLastWarnings(t *testing.T) {
	s := &stderrLogger{log: hclog.NewNullLogger()}
	s.line("INFO x: not kept")
	for i := 0; i < stderrTailLines+5; i++ {
		s.line("ERROR x: line " + strings.Repeat("i", i))
	}
	tail := strings.Split(s.Tail(), "\n")
	if len(tail) != stderrTailLines || !strings.HasSuffix(tail[len(tail)-1], strings.Repeat("i", stderrTailLines+4)) {
		t.Fatalf("tail = %q", tail)
	}
}

func TestReadLinesCapsLongLines(t *testing.T) {
	long := strings.Repeat("x", maxLogLine*2)
	var got []string
	readLines(io.NopCloser(strings.NewReader("a\r\n"+long+"\nlast-without-newline")), func(l string) { got = append(got, l) })
	if len(got) != 3 || got[0] != "a" || len(got[1]) != maxLogLine || got[2] != "last-without-newline" {
		t.Fatalf("lines: %d, first %q, second %d bytes, third %q", len(got), got[0], len(got[1]), got[len(got)-1])
	}
}

func TestExitStatusString(t *testing.T) {
	if got := (ExitStatus{Code: 3}).String(); got != "exit code 3" {
		t.Fatal(got)
	}
	if got := (ExitStatus{Code: -1, Signal: syscall.SIGKILL}).String(); got != "killed by signal 9 (SIGKILL)" {
		t.Fatal(got)
	}
}

func TestPrintableEscapesWhatATerminalWouldRun(t *testing.T) {
	cases := map[string]string{
		"plain text\twith a tab": "plain text\twith a tab",
		"héllo ✓":                "héllo ✓",
		"\x1b[31mred\x1b[0m":     `\x1b[31mred\x1b[0m`,
		"nul\x00byte":            `nul\x00byte`,
		"bad \xff utf8":          `bad \xff utf8`,
		"del\x7f":                `del\x7f`,
	}
	for in, want := range cases {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestOutputStreamKeepsRecentLinesAndThePartialOne: the last recentLines
// lines are kept, then the line not ended yet, marked as such; a partial
// line is handed over at EOF.
func TestOutputStreamKeepsRecentLinesAndThePartialOne(t *testing.T) {
	var got []string
	o := newOutputStream(func(l string) { got = append(got, l) })
	for i := 0; i < recentLines+3; i++ {
		o.write([]byte("line " + strconv.Itoa(i) + "\r\n"))
	}
	o.write([]byte("load"))
	o.write([]byte("ing..."))
	recent := strings.Split(o.Recent(), "\n")
	if len(recent) != recentLines+1 || recent[0] != "line 3" ||
		recent[len(recent)-1] != "loading...  [partial line: no newline yet]" {
		t.Fatalf("recent: %q", recent)
	}
	o.readFrom(io.NopCloser(strings.NewReader(strings.Repeat("x", 2*recentLineBytes))))
	if last := got[len(got)-1]; last != "loading..."+strings.Repeat("x", 2*recentLineBytes) {
		t.Fatalf("at EOF the partial line was handed over as %q", last)
	}
	if r := o.Recent(); !strings.HasSuffix(r, "("+strconv.Itoa(len("loading...")+recentLineBytes)+" bytes cut)") {
		t.Fatalf("a long line is not cut in the recent lines: ...%q", r[len(r)-40:])
	}
	select {
	case <-o.done:
	default:
		t.Fatal("done is not closed at EOF")
	}
}
