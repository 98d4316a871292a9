package configdoc

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/snakepit-go/snakepit/telemetry"
)

// Markers of the generated metrics table in docs/telemetry.md.
const (
	MetricsBegin = "<!-- metrics-catalogue:begin (go generate; do not edit) -->"
	MetricsEnd   = "<!-- metrics-catalogue:end -->"
)

// MetricsTable renders every metric telemetry.Metrics exports: it feeds a
// fresh set one event of each kind and a one-pool snapshot, then lists
// what a scrape returns, so the table is what the code serves.
func MetricsTable() (string, error) {
	m := telemetry.NewMetrics(func() []telemetry.PoolGauges {
		return []telemetry.PoolGauges{{Pool: "p", WorkerRSS: map[string]uint64{"p-0": 1}}}
	})
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		return "", err
	}
	for _, e := range []telemetry.Event{
		telemetry.RequestExecuted{Duration: time.Millisecond}, telemetry.PoolSaturated{}, telemetry.CapacityReached{},
		telemetry.QueueTimeout{}, telemetry.WorkerCrashed{}, telemetry.WorkerRestarted{}, telemetry.WorkerRecycled{},
		telemetry.BootFailed{}, telemetry.RestartIntensityExceeded{},
	} {
		m.Observe(e)
	}
	families, err := reg.Gather()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("\n| metric | type | labels | meaning |\n|---|---|---|---|\n")
	for _, f := range families {
		var labels []string
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		slices.Sort(labels)
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", f.GetName(), strings.ToLower(f.GetType().String()),
			strings.Join(labels, ", "), cell(f.GetHelp()))
	}
	return b.String(), nil
}
