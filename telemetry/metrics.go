package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics turns the event stream into Prometheus metrics: counters and
// histograms fed by Observe (subscribe it to the runtime's events), plus
// gauges read from a snapshot at scrape time (queue depth, capacity, load,
// worker memory). Every metric is named snakepit_*.
type Metrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	saturated     *prometheus.CounterVec
	capacity      *prometheus.CounterVec
	queueTimeouts *prometheus.CounterVec
	crashes       *prometheus.CounterVec
	restarts      *prometheus.CounterVec
	recycles      *prometheus.CounterVec
	bootFailures  *prometheus.CounterVec
	poolFailures  *prometheus.CounterVec
	gauges        *gaugeCollector
}

// NewMetrics returns the metrics; snapshot (may be nil) is called on each
// scrape for the gauges.
func NewMetrics(snapshot func() []PoolGauges) *Metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "snakepit", Name: name, Help: help}, labels)
	}
	return &Metrics{
		requests: counter("requests_total", "Calls finished on a worker, by pool, tool and outcome.", "pool", "tool", "outcome"),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "snakepit", Name: "request_duration_seconds",
			Help:    "Time from a worker taking a call to its answer.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"pool", "tool"}),
		saturated:     counter("saturated_total", "Calls refused because the pool's queue was full.", "pool"),
		capacity:      counter("capacity_reached_total", "Calls that filled a worker to its capacity.", "pool"),
		queueTimeouts: counter("queue_timeouts_total", "Calls whose deadline passed while queued.", "pool"),
		crashes:       counter("worker_crashes_total", "Worker processes that died or were killed by the runtime.", "pool"),
		restarts:      counter("worker_restarts_total", "Worker restarts after a crash.", "pool"),
		recycles:      counter("worker_recycles_total", "Workers replaced on purpose, by reason.", "pool", "reason"),
		bootFailures:  counter("boot_failures_total", "Workers that could not start their adapter.", "pool"),
		poolFailures:  counter("restart_intensity_exceeded_total", "Pools that gave up after too many restarts.", "pool"),
		gauges:        newGaugeCollector(snapshot),
	}
}

// Register registers every metric with reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.saturated, m.capacity, m.queueTimeouts,
		m.crashes, m.restarts, m.recycles, m.bootFailures, m.poolFailures, m.gauges} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Observe updates the metrics with one event.
func (m *Metrics) Observe(e Event) {
	switch e := e.(type) {
	case RequestExecuted:
		m.requests.WithLabelValues(e.Pool, e.Tool, e.Outcome).Inc()
		m.duration.WithLabelValues(e.Pool, e.Tool).Observe(e.Duration.Seconds())
	case PoolSaturated:
		m.saturated.WithLabelValues(e.Pool).Inc()
	case CapacityReached:
		m.capacity.WithLabelValues(e.Pool).Inc()
	case QueueTimeout:
		m.queueTimeouts.WithLabelValues(e.Pool).Inc()
	case WorkerCrashed:
		m.crashes.WithLabelValues(e.Pool).Inc()
	case WorkerRestarted:
		m.restarts.WithLabelValues(e.Pool).Inc()
	case WorkerRecycled:
		m.recycles.WithLabelValues(e.Pool, e.Reason).Inc()
	case BootFailed:
		m.bootFailures.WithLabelValues(e.Pool).Inc()
	case RestartIntensityExceeded:
		m.poolFailures.WithLabelValues(e.Pool).Inc()
	}
}

// PoolGauges is what the gauges read from a pool at scrape time.
type PoolGauges struct {
	Pool              string
	Queued, QueueSize int
	Capacity, Load    int
	Ready, Size       int
	Failed            bool
	WorkerRSS         map[string]uint64 // by worker id; 0 values are skipped
}

type gaugeCollector struct {
	snapshot                                       func() []PoolGauges
	queued, queueSize, capacity, load, ready, size *prometheus.Desc
	failed, rss                                    *prometheus.Desc
}

func newGaugeCollector(snapshot func() []PoolGauges) *gaugeCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("snakepit_"+name, help, labels, nil)
	}
	return &gaugeCollector{snapshot: snapshot,
		queued:    desc("queue_depth", "Calls waiting for a free worker.", "pool"),
		queueSize: desc("queue_limit", "The bound of the pool's queue (PoolConfig.QueueSize).", "pool"),
		capacity:  desc("capacity", "Calls the pool's ready workers can run at once.", "pool"),
		load:      desc("load", "Calls the pool's workers run now.", "pool"),
		ready:     desc("workers_ready", "Workers ready to take calls.", "pool"),
		size:      desc("workers_configured", "Workers the pool is configured with (PoolConfig.Size).", "pool"),
		failed:    desc("pool_failed", "1 when the pool has given up (see Runtime.Health).", "pool"),
		rss:       desc("worker_rss_bytes", "Resident memory of a worker's Python process.", "pool", "worker"),
	}
}

func (g *gaugeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{g.queued, g.queueSize, g.capacity, g.load, g.ready, g.size, g.failed, g.rss} {
		ch <- d
	}
}

func (g *gaugeCollector) Collect(ch chan<- prometheus.Metric) {
	if g.snapshot == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, p := range g.snapshot() {
		gauge(g.queued, float64(p.Queued), p.Pool)
		gauge(g.queueSize, float64(p.QueueSize), p.Pool)
		gauge(g.capacity, float64(p.Capacity), p.Pool)
		gauge(g.load, float64(p.Load), p.Pool)
		gauge(g.ready, float64(p.Ready), p.Pool)
		gauge(g.size, float64(p.Size), p.Pool)
		failed := 0.0
		if p.Failed {
			failed = 1
		}
		gauge(g.failed, failed, p.Pool)
		for w, rss := range p.WorkerRSS {
			if rss > 0 {
				gauge(g.rss, float64(rss), p.Pool, w)
			}
		}
	}
}
