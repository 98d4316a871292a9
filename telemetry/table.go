package telemetry

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/snakepit-go/snakepit/supervision"
)

// TableOptions choose what RenderTable shows.
type TableOptions struct {
	Detailed        bool // a row per worker under each pool
	Recommendations bool // each pool's recommendations under it
	Color           bool // ANSI colour on utilisation (green, yellow at warn, red when critical)
}

// ANSI colours.
const (
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiRed    = "\x1b[31m"
	ansiReset  = "\x1b[0m"
)

// RenderTable writes r as fixed-width text tables: one row per pool, the
// saturation's reason under any pool that is not ok, and with opts a row
// per worker and the recommendations.
func RenderTable(w io.Writer, r Report, opts TableOptions) error {
	ew := &errWriter{w: w}
	fmt.Fprintf(ew, "snakepit inspect at %s\n\n", r.Time.UTC().Format(time.RFC3339))
	if len(r.Pools) == 0 {
		fmt.Fprintln(ew, "no pools")
		return ew.err
	}
	pools := table{head: []string{"POOL", "PROFILE", "PYTHON", "GIL", "WORKERS", "UTIL", "LOAD", "QUEUE", "WAITED", "REFUSED", "RESTARTS", "RECYCLES", "SATURATION"}}
	for _, p := range r.Pools {
		pools.add(poolRow(p, opts.Color)...)
	}
	pools.write(ew, "")
	for _, p := range r.Pools {
		writePoolDetail(ew, p, opts)
	}
	return ew.err
}

func poolRow(p PoolReport, color bool) []cell {
	sat := p.Saturation.Level
	if p.Failed {
		sat += " (failed)"
	}
	return []cell{
		plain(p.Name), plain(orDash(p.Profile)), plain(pythonText(p)), plain(gilText(p)),
		plain(fmt.Sprintf("%d/%d", p.Ready, p.Size)),
		utilCell(p.Utilisation, p.Saturation.Level, color),
		plain(fmt.Sprintf("%d/%d", p.Load, p.Capacity)),
		plain(fmt.Sprintf("%d/%d", p.Queued, p.QueueSize)),
		plain(strconv.FormatInt(p.NoFreeCapacity, 10)), plain(strconv.FormatInt(p.Saturated, 10)),
		plain(strconv.Itoa(p.Restarts)), plain(recycles(p.Recycles)), plain(sat),
	}
}

func writePoolDetail(w io.Writer, p PoolReport, opts TableOptions) {
	var lines []string
	if p.Saturation.Level != LevelOK {
		lines = append(lines, fmt.Sprintf("  saturation %s: %s", p.Saturation.Level, p.Saturation.Why))
	}
	if p.Failed {
		lines = append(lines, "  failed: "+p.FailReason)
	}
	if p.Incomplete != "" {
		lines = append(lines, "  incomplete: "+p.Incomplete)
	}
	if opts.Recommendations {
		for _, rec := range p.Recommendations {
			lines = append(lines, fmt.Sprintf("  [%s] %s: %s", rec.Severity, rec.Rule, rec.Message))
		}
	}
	if len(lines) == 0 && !opts.Detailed {
		return
	}
	fmt.Fprintf(w, "\npool %s\n", p.Name)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	if opts.Detailed {
		workerTable(p, opts.Color).write(w, "  ")
	}
}

func workerTable(p PoolReport, color bool) *table {
	t := &table{head: []string{"WORKER", "PID", "STATE", "UTIL", "LOAD", "UPTIME", "REQUESTS", "RESTARTS", "RSS", "PSS", "LAST EXIT"}}
	for _, w := range p.Workers {
		level := LevelOK
		if w.Utilisation >= DefaultThresholds().UtilisationWarn {
			level = LevelWarn
		}
		t.add(plain(w.ID), plain(pidText(w.Pid)), plain(state(w)), utilCell(w.Utilisation, level, color),
			plain(fmt.Sprintf("%d/%d", w.Load, w.Capacity)), plain(shortDuration(w.Uptime)),
			plain(strconv.FormatInt(w.Requests, 10)), plain(strconv.Itoa(w.Restarts)),
			plain(formatBytes(w.RSS)), plain(formatBytes(w.PSS)), plain(orDash(w.LastExit)))
	}
	return t
}

func pidText(p int) string {
	if p == 0 {
		return "-"
	}
	return strconv.Itoa(p)
}

func state(w WorkerReport) string {
	switch {
	case w.Retiring:
		return "retiring"
	case w.Starting:
		return "starting"
	case w.Ready:
		return "ready"
	}
	return "down"
}

func pythonText(p PoolReport) string {
	if p.Python == "" {
		return "-"
	}
	if p.FreeThreaded {
		return p.Python + "t"
	}
	return p.Python
}

func gilText(p PoolReport) string {
	switch {
	case p.Python == "":
		return "-"
	case p.GILEnabled:
		return "on"
	}
	return "off"
}

// recycles is "3 (memory 2, age 1)", reasons in name order.
func recycles(m map[string]int64) string {
	var n int64
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] > 0 {
			n += m[k]
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	if n == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%s)", n, strings.Join(parts, ", "))
}

func utilCell(u float64, level string, color bool) cell {
	c := cell{text: pct(u)}
	if !color {
		return c
	}
	switch level {
	case LevelCritical:
		c.color = ansiRed
	case LevelWarn:
		c.color = ansiYellow
	default:
		c.color = ansiGreen
	}
	return c
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortDuration rounds d for people: "850ms", "42s", "1h2m3s"; "-" for 0.
func shortDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// formatBytes is "512 B", "21.4 MiB"; "-" for 0 (unknown).
func formatBytes(b uint64) string {
	if b == 0 {
		return "-"
	}
	return supervision.FormatBytes(b)
}

// A cell is a table cell's text and its optional ANSI colour, kept apart
// so colour codes do not count towards the column width.
type cell struct{ text, color string }

func plain(s string) cell { return cell{text: s} }

type table struct {
	head []string
	rows [][]cell
}

func (t *table) add(cells ...cell) { t.rows = append(t.rows, cells) }

// write pads every column to its widest cell, two spaces apart, each line
// after indent; trailing spaces are trimmed.
func (t *table) write(w io.Writer, indent string) {
	width := make([]int, len(t.head))
	for i, h := range t.head {
		width[i] = utf8.RuneCountInString(h)
	}
	for _, r := range t.rows {
		for i, c := range r {
			width[i] = max(width[i], utf8.RuneCountInString(c.text))
		}
	}
	head := make([]cell, len(t.head))
	for i, h := range t.head {
		head[i] = plain(h)
	}
	for _, r := range append([][]cell{head}, t.rows...) {
		var b strings.Builder
		b.WriteString(indent)
		for i, c := range r {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c.text))
			if c.color != "" {
				b.WriteString(c.color + c.text + ansiReset)
			} else {
				b.WriteString(c.text)
			}
			if i < len(r)-1 {
				b.WriteString(pad + "  ")
			}
		}
		fmt.Fprintln(w, b.String())
	}
}

// errWriter keeps the first write error and drops the writes after it.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return len(p), nil
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
