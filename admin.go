package snakepit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/snakepit-go/snakepit/pyworker"
	"github.com/snakepit-go/snakepit/telemetry"
)

// scrapeTimeout bounds what one /metrics or /inspect request asks the pools.
const scrapeTimeout = 5 * time.Second

// metricsState is the runtime's Prometheus metrics, made on first need.
type metricsState struct {
	once     sync.Once
	registry *prometheus.Registry
	sub      *telemetry.Subscription
}

// MetricsHandler serves the runtime's metrics in the Prometheus exposition
// format (docs/telemetry.md lists them), for a mux of your own; the admin
// endpoint (Config.AdminAddr) serves the same at /metrics. The counters
// count from the first call of MetricsHandler, or from Start when
// Config.AdminAddr is set.
func (rt *Runtime) MetricsHandler() http.Handler {
	rt.ensureMetrics()
	return promhttp.HandlerFor(rt.metrics.registry, promhttp.HandlerOpts{})
}

func (rt *Runtime) ensureMetrics() {
	rt.metrics.once.Do(func() {
		m := telemetry.NewMetrics(rt.gauges)
		rt.metrics.registry = prometheus.NewRegistry()
		_ = m.Register(rt.metrics.registry) // a fresh registry: no clash
		rt.metrics.sub = rt.events.Subscribe(m.Observe)
	})
}

// gauges reads each pool's gauges for a scrape; the memory of each worker
// is read from /proc now.
func (rt *Runtime) gauges() []telemetry.PoolGauges {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	hs, err := rt.Health(ctx)
	if err != nil {
		return nil
	}
	out := make([]telemetry.PoolGauges, 0, len(hs))
	for _, h := range hs {
		g := telemetry.PoolGauges{Pool: h.Name, Queued: h.Queued, QueueSize: h.QueueSize, Ready: h.Ready, Size: h.Size,
			Failed: h.Failed, WorkerRSS: map[string]uint64{}}
		for _, w := range h.Workers {
			if w.Ready && !w.Retiring {
				g.Capacity += w.Capacity
				g.Load += w.Load
			}
			if rss, err := pyworker.ResidentBytes(w.Pid); err == nil && w.Pid > 0 {
				g.WorkerRSS[w.ID] = rss
			}
		}
		out = append(out, g)
	}
	return out
}

// AdminAddr is the address the admin endpoint listens on ("" when
// Config.AdminAddr is not set): with port 0 in the config, the port chosen.
func (rt *Runtime) AdminAddr() string {
	if rt.admin == nil {
		return ""
	}
	return rt.admin.addr
}

type adminServer struct {
	srv  *http.Server
	addr string
	done chan struct{}
}

// adminListenAddr puts a host-less address on loopback: the endpoint is
// reachable from other machines only when the config names their interface.
func adminListenAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// startAdmin listens on Config.AdminAddr and serves /metrics, /inspect and
// /healthz.
func (rt *Runtime) startAdmin() error {
	addr, err := adminListenAddr(rt.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("snakepit: admin endpoint (Config.AdminAddr %q): %w", rt.cfg.AdminAddr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("snakepit: admin endpoint (Config.AdminAddr %q): %w", rt.cfg.AdminAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", rt.MetricsHandler())
	mux.HandleFunc("/inspect", rt.serveInspect)
	mux.HandleFunc("/healthz", rt.serveHealthz)
	a := &adminServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, addr: ln.Addr().String(),
		done: make(chan struct{})}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			rt.log.Error("admin endpoint stopped", "error", err)
		}
	}()
	rt.admin = a
	rt.log.Info("admin endpoint listening", "addr", a.addr, "paths", "/metrics /inspect /healthz")
	return nil
}

func (rt *Runtime) stopAdmin(ctx context.Context) {
	if rt.admin == nil {
		return
	}
	_ = rt.admin.srv.Shutdown(ctx)
	<-rt.admin.done
}

// serveInspect answers with Inspect's report as JSON; ?pool=NAME keeps one
// pool.
func (rt *Runtime) serveInspect(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), scrapeTimeout)
	defer cancel()
	rep, err := rt.Inspect(ctx)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if name := r.URL.Query().Get("pool"); name != "" {
		var keep []telemetry.PoolReport
		for _, p := range rep.Pools {
			if p.Name == name {
				keep = append(keep, p)
			}
		}
		if keep == nil {
			http.Error(w, fmt.Sprintf("no pool %q", name), http.StatusNotFound)
			return
		}
		rep.Pools = keep
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(rep)
}

// serveHealthz answers 200 when every pool serves, 503 listing the failed
// pools (and why) otherwise.
func (rt *Runtime) serveHealthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), scrapeTimeout)
	defer cancel()
	hs, err := rt.Health(ctx)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	failed := map[string]string{}
	for _, h := range hs {
		if h.Failed {
			failed[h.Name] = h.Reason
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if len(failed) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "failed", "failed_pools": failed})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "ok"})
}
