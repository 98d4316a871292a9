package harness

import (
	"fmt"
	"time"
)

// FmtRate formats calls/s: whole numbers from 100 up, one decimal below.
func FmtRate(r float64) string {
	if r >= 100 {
		return fmt.Sprintf("%.0f", r)
	}
	return fmt.Sprintf("%.1f", r)
}

// FmtDur formats a duration given in nanoseconds as µs or ms.
func FmtDur(ns float64) string {
	d := time.Duration(ns)
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", ns/1e3)
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	default:
		return fmt.Sprintf("%.0f ms", ns/1e6)
	}
}

// FmtMiB formats a byte count in MiB.
func FmtMiB(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }
