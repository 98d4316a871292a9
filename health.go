package snakepit

import (
	"context"
	"fmt"

	"github.com/snakepit-go/snakepit/actors"
)

// PoolHealth is the state of one pool, as Runtime.Health reports it: the
// pool actor's own report, where each field is documented
// (actors.PoolHealth), so that a field is added in one place.
type PoolHealth = actors.PoolHealth

// WorkerHealth is the state of one worker as its pool sees it
// (actors.WorkerHealth documents each field).
type WorkerHealth = actors.WorkerHealth

// Health reports every pool, in Config order.
func (rt *Runtime) Health(ctx context.Context) ([]PoolHealth, error) {
	if rt.stopping.Load() {
		return nil, fmt.Errorf("snakepit: health: %w: Stop was called; start a new Runtime with snakepit.Start", ErrStopped)
	}
	out := make([]PoolHealth, 0, len(rt.names))
	for _, name := range rt.names {
		st, err := askFor[*actors.PoolStatus](ctx, rt, rt.pools[name], &actors.StatusRequest{})
		if err != nil {
			return nil, fmt.Errorf("snakepit: health of pool %q: %w", name, err)
		}
		out = append(out, st.PoolHealth)
	}
	return out, nil
}
