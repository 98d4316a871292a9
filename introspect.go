package snakepit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/snakepit-go/snakepit/actors"
)

// Tool describes one tool of a pool's adapter.
type Tool struct {
	Name   string
	Doc    string
	Params []Param
	Async  bool // an "async def" tool
}

// Param is one parameter of a tool.
type Param struct {
	Name       string
	Annotation string // as written in Python, "" when absent
	Required   bool
	Default    string // JSON, when it has a default JSON can encode
	Kind       string // e.g. POSITIONAL_OR_KEYWORD, KEYWORD_ONLY, VAR_KEYWORD
}

// Tools lists the tools of pool's adapter, as one of its ready workers
// reports them.
func (rt *Runtime) Tools(ctx context.Context, pool string) ([]Tool, error) {
	pid, err := rt.pool(pool)
	if err != nil {
		return nil, err
	}
	a, err := askFor[*actors.DescribeAnswer](ctx, rt, pid, &actors.DescribeQuery{})
	if err != nil {
		return nil, fmt.Errorf("snakepit: tools of pool %q: %w", pool, err)
	}
	if a.Err != nil {
		return nil, fmt.Errorf("snakepit: tools of pool %q: %w", pool, a.Err)
	}
	tools := make([]Tool, 0, len(a.Reply.GetTools()))
	for _, t := range a.Reply.GetTools() {
		tool := Tool{Name: t.GetName(), Doc: t.GetDoc(), Async: t.GetIsAsync()}
		for _, p := range t.GetParams() {
			tool.Params = append(tool.Params, Param{Name: p.GetName(), Annotation: p.GetAnnotation(),
				Required: p.GetRequired(), Default: p.GetDefaultJson(), Kind: p.GetKind()})
		}
		tools = append(tools, tool)
	}
	return tools, nil
}

// WorkerStats is what one worker's Python process reports about itself.
type WorkerStats struct {
	ID             string
	Pid            int
	Python         string // e.g. "3.11.2"
	Implementation string // e.g. "CPython"
	FreeThreaded   bool   // built with Py_GIL_DISABLED
	GILEnabled     bool   // the GIL is on at run time
	// GILEnabledBy names the module whose import switched the GIL on in a
	// free-threaded worker (when Python's warning named it), GILEnabledWhen
	// when the worker noticed: "adapter import", "first call of tool X".
	GILEnabledBy, GILEnabledWhen string
	Capacity                     int
	Profile                      string // "process" or "thread", as the worker runs
	InFlight                     int
	MaxInFlight                  int // the most calls that ever ran at once in it
	// ThreadViolations counts concurrent entries into code marked
	// @snakepit.single_threaded (PoolConfig.ThreadSafetyChecks; 0 when off).
	ThreadViolations int64
	RequestsServed   int64
	RSSBytes         int64
	Uptime           time.Duration
}

// Stats asks every ready worker of pool for its statistics. Workers that are
// restarting are left out.
func (rt *Runtime) Stats(ctx context.Context, pool string) ([]WorkerStats, error) {
	pid, err := rt.pool(pool)
	if err != nil {
		return nil, err
	}
	st, err := askFor[*actors.PoolStatus](ctx, rt, pid, &actors.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("snakepit: stats of pool %q: %w", pool, err)
	}
	var out []WorkerStats
	var errs []error
	for i, w := range st.Workers {
		if !w.Ready {
			continue
		}
		a, err := askFor[*actors.StatsAnswer](ctx, rt, st.WorkerPIDs[i], &actors.StatsQuery{})
		if err != nil {
			return nil, fmt.Errorf("snakepit: stats of worker %s: %w", w.ID, err)
		}
		if a.Err != nil {
			errs = append(errs, fmt.Errorf("worker %s: %w", w.ID, a.Err))
			continue
		}
		s := a.Reply
		out = append(out, WorkerStats{ID: w.ID, Pid: int(s.GetPid()), Python: s.GetPythonVersion(),
			Implementation: s.GetImplementation(), FreeThreaded: s.GetFreeThreadedBuild(), GILEnabled: s.GetGilEnabled(),
			GILEnabledBy: s.GetGilEnabledBy(), GILEnabledWhen: s.GetGilEnabledWhen(),
			Capacity: int(s.GetCapacity()), Profile: s.GetProfile(), InFlight: int(s.GetInFlight()), MaxInFlight: int(s.GetMaxInFlight()), ThreadViolations: s.GetThreadViolations(), RequestsServed: s.GetRequestsServed(),
			RSSBytes: s.GetRssBytes(), Uptime: time.Duration(s.GetUptimeSeconds() * float64(time.Second))})
	}
	if len(out) == 0 && len(errs) > 0 {
		return nil, fmt.Errorf("snakepit: stats of pool %q: %w", pool, errors.Join(errs...))
	}
	return out, nil
}

// pool returns the PID of the named pool.
func (rt *Runtime) pool(name string) (*actor.PID, error) {
	if rt.stopping.Load() {
		return nil, fmt.Errorf("snakepit: pool %q: %w: Stop was called; start a new Runtime with snakepit.Start", name, ErrStopped)
	}
	pid, ok := rt.pools[name]
	if !ok {
		return nil, fmt.Errorf("snakepit: pool %q: %w; configured pools: %s", name, ErrUnknownPool, strings.Join(rt.names, ", "))
	}
	return pid, nil
}
