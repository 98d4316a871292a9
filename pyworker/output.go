package pyworker

import (
	"bufio"
	"fmt"
	"io"
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
)

// readLines calls fn for every line of r (without its newline), made
// printable; lines longer than maxLogLine are cut. It returns at EOF or on a
// read error, and closes r: the reader owns the pipe's read end, which would
// otherwise stay open until the garbage collector finalised it.
func readLines(r io.ReadCloser, fn func(string)) {
	defer func() { _ = r.Close() }()
	br := bufio.NewReaderSize(r, 4096)
	for {
		line, err := readCappedLine(br)
		if line != "" || err == nil {
			fn(printable(line))
		}
		if err != nil {
			return
		}
	}
}

func readCappedLine(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		chunk, err := br.ReadSlice('\n')
		if b.Len() < maxLogLine {
			room := maxLogLine - b.Len()
			if len(chunk) > room {
				chunk = chunk[:room]
			}
			b.Write(chunk)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		return strings.TrimRight(b.String(), "\r\n"), err
	}
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
