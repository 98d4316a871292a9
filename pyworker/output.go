package pyworker

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
)

const (
	readyPrefix     = "SNAKEPIT-READY "
	bootErrorPrefix = "SNAKEPIT-BOOT-ERROR "
	maxLogLine      = 64 << 10
	stderrTailLines = 100 // a fatal error with every thread's stack fits
	recentLines     = 20  // lines of each stream a start-timeout error shows
	recentLineBytes = 1 << 10
)

// readLines calls fn for every line of r (without its newline), made
// printable; lines longer than maxLogLine are cut. A last line without a
// newline is handed over at EOF. It returns at EOF or on a read error, and
// closes r: the reader owns the pipe's read end, which would otherwise stay
// open until the garbage collector finalised it.
func readLines(r io.ReadCloser, fn func(string)) { newOutputStream(fn).readFrom(r) }

// outputStream splits one of a worker's output streams into lines for fn,
// and keeps the last recentLines of them and the line not ended yet: what
// a worker that did not become ready had said.
type outputStream struct {
	fn   func(string)
	done chan struct{} // closed once the stream reached EOF

	mu      sync.Mutex
	partial []byte   // the line read so far, up to maxLogLine bytes
	recent  []string // the last lines, each cut at recentLineBytes
}

func newOutputStream(fn func(string)) *outputStream {
	return &outputStream{fn: fn, done: make(chan struct{})}
}

// readFrom reads r to its end (see readLines), then closes r and o.done.
func (o *outputStream) readFrom(r io.ReadCloser) {
	defer close(o.done)
	defer func() { _ = r.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		o.write(buf[:n])
		if err != nil {
			if o.pending() {
				o.endLine()
			}
			return
		}
	}
}

func (o *outputStream) write(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			o.add(p)
			return
		}
		o.add(p[:i])
		o.endLine()
		p = p[i+1:]
	}
}

func (o *outputStream) add(b []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if room := maxLogLine - len(o.partial); len(b) > room {
		b = b[:room]
	}
	o.partial = append(o.partial, b...)
}

func (o *outputStream) pending() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.partial) > 0
}

func (o *outputStream) endLine() {
	o.mu.Lock()
	line := printable(strings.TrimRight(string(o.partial), "\r"))
	o.partial = o.partial[:0]
	if len(o.recent) == recentLines {
		copy(o.recent, o.recent[1:])
		o.recent = o.recent[:recentLines-1]
	}
	o.recent = append(o.recent, cutLine(line))
	o.mu.Unlock()
	o.fn(line)
}

// Recent returns the last lines of the stream, then the line it is in the
// middle of (marked as such), one per line; "" when it carried nothing.
func (o *outputStream) Recent() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	lines := slices.Clone(o.recent)
	if len(o.partial) > 0 {
		lines = append(lines, cutLine(printable(string(o.partial)))+"  [partial line: no newline yet]")
	}
	return strings.Join(lines, "\n")
}

func cutLine(line string) string {
	if len(line) <= recentLineBytes {
		return line
	}
	return line[:recentLineBytes] + fmt.Sprintf("... (%d bytes cut)", len(line)-recentLineBytes)
}

// stderrLogger re-logs a worker's stderr through hclog at the level the Python
// logging format names ("WARNING name: message"); indented continuation lines
// keep the previous line's level. It also keeps the last lines for crash reports.
type stderrLogger struct {
	log  hclog.Logger
	last hclog.Level

	mu   sync.Mutex
	tail []string
}

var pythonLevels = map[string]hclog.Level{
	"DEBUG": hclog.Debug, "INFO": hclog.Info, "WARNING": hclog.Warn,
	"ERROR": hclog.Error, "CRITICAL": hclog.Error,
}

func (s *stderrLogger) line(text string) {
	level, msg := s.classify(text)
	if level >= hclog.Warn {
		s.remember(text) // what explains a death: warnings, errors, raw output
	}
	s.log.Log(level, msg, "stream", "stderr")
}

func (s *stderrLogger) classify(text string) (hclog.Level, string) {
	if strings.HasPrefix(text, "    ") && s.last != hclog.NoLevel {
		return s.last, text
	}
	if word, rest, ok := strings.Cut(text, " "); ok {
		if level, known := pythonLevels[word]; known {
			s.last = level
			return level, rest
		}
	}
	s.last = hclog.Warn // unformatted stderr: an interpreter message or a stray print
	return hclog.Warn, text
}

func (s *stderrLogger) remember(text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tail) == stderrTailLines {
		copy(s.tail, s.tail[1:])
		s.tail = s.tail[:stderrTailLines-1]
	}
	s.tail = append(s.tail, text)
}

// Tail returns the last warning, error or unformatted lines the worker
// wrote to stderr.
func (s *stderrLogger) Tail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.tail, "\n")
}

// printable escapes what a worker's output must not put into the host's
// logs as is: control characters (a terminal escape sequence, a NUL) and
// bytes that are not UTF-8 become \xNN. Tabs stay.
func printable(s string) string {
	clean := utf8.ValidString(s)
	for i := 0; clean && i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			clean = false
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1, r < 0x20 && r != '\t', r == 0x7f:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
