package snakepit

import (
	"context"
	"fmt"

	"github.com/snakepit-go/snakepit/actors"
	"github.com/snakepit-go/snakepit/supervision"
	"github.com/snakepit-go/snakepit/telemetry"
)

// RecycleReason says why a worker was recycled (telemetry.WorkerRecycled's
// Reason, PoolHealth.Recycles' keys).
type RecycleReason = supervision.RecycleReason

// The reasons a worker is recycled.
const (
	RecycleAge             = supervision.RecycleAge
	RecycleRequests        = supervision.RecycleRequests
	RecycleMemory          = supervision.RecycleMemory
	RecycleMemoryHardLimit = supervision.RecycleMemoryHardLimit
	RecycleManual          = supervision.RecycleManual
	RecycleProfile         = supervision.RecycleProfile
)

// ErrUnknownWorker: no worker of that id in the pool (see Runtime.Health for
// the ids; a recycled worker's id is never reused).
var ErrUnknownWorker = actors.ErrUnknownWorker

// Recycle replaces one worker of pool gracefully, with reason "manual": a
// replacement starts and becomes ready first, then the worker takes no new
// call, finishes those it runs (within RecyclePolicy.DrainTimeout) and stops.
// A worker holding strict sessions keeps serving them until they close, or
// PoolConfig.Sessions.DrainTimeout passes (they are lost then); its hint
// sessions move to other workers on their next call. It returns once the old
// worker has stopped. If the replacement cannot
// start, the worker keeps serving and the error says why.
func (rt *Runtime) Recycle(ctx context.Context, pool, workerID string) error {
	return rt.recycle(ctx, pool, "recycle "+workerID, &actors.RecycleWorker{ID: workerID})
}

// RecycleAll replaces every worker of pool, RecyclePolicy.MaxConcurrent at a
// time, each as Recycle does: a rolling restart, e.g. after deploying new
// Python code. Calls keep being served throughout. It returns once every
// worker present when it was called has been replaced.
func (rt *Runtime) RecycleAll(ctx context.Context, pool string) error {
	return rt.recycle(ctx, pool, "recycle all", &actors.RecycleAll{})
}

func (rt *Runtime) recycle(ctx context.Context, pool, what string, msg any) error {
	pid, err := rt.pool(pool)
	if err != nil {
		return err
	}
	r, err := askFor[*actors.RecycleDone](ctx, rt, pid, msg)
	if err != nil {
		return fmt.Errorf("snakepit: %s of pool %q: %w", what, pool, err)
	}
	if err := r.Err; err != nil {
		return fmt.Errorf("snakepit: %s of pool %q: %w", what, pool, err)
	}
	return nil
}

// Subscribe calls fn with every event the runtime publishes from now on
// (telemetry.WorkerRecycled, ...), one at a time on a goroutine of its own.
// Publishing never waits for fn: a subscriber more than
// telemetry.SubscriberBuffer events behind misses events (counted by
// Dropped). Close the subscription when done.
func (rt *Runtime) Subscribe(fn func(telemetry.Event)) *telemetry.Subscription {
	return rt.events.Subscribe(fn)
}
