package snakepit

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/snakepit-go/snakepit/actors"
)

// Stop drains the runtime: new calls fail with ErrStopped, queued and
// in-flight calls may finish until ctx ends, then every worker is asked to
// shut down, then its process group gets SIGTERM and, Config.KillAfter
// later, SIGKILL. Stop returns once no Python process of the runtime is
// left. Calling it again returns the first call's result.
func (rt *Runtime) Stop(ctx context.Context) error {
	rt.stopOnce.Do(func() {
		rt.stopping.Store(true)
		rt.stopErr = rt.shutdown(ctx)
		rt.log.Info("runtime stopped", "run_id", rt.runID)
	})
	return rt.stopErr
}

func (rt *Runtime) shutdown(ctx context.Context) error {
	rt.stopAdmin(ctx)
	if rt.system != nil {
		rt.drain(ctx)
		for _, name := range rt.names { // stops workers first, then the pool
			rt.system.Root.PoisonFuture(rt.pools[name]).Wait()
		}
	}
	err := rt.reapAll(ctx)
	if rt.system != nil {
		rt.system.Shutdown()
	}
	_ = os.RemoveAll(rt.runDir)
	if rt.onEvent != nil {
		rt.onEvent.Close() // after the last worker's events
	}
	if rt.metrics.sub != nil {
		rt.metrics.sub.Close()
	}
	return err
}

// drain waits until no call is queued or running in any pool, or ctx ends.
func (rt *Runtime) drain(ctx context.Context) {
	for _, name := range rt.names {
		if _, err := rt.ask(ctx, rt.pools[name], &actors.Drain{}); err != nil {
			rt.log.Warn("stop: in-flight calls did not finish in time", "pool", name, "error", err)
			return
		}
	}
}

// reapAll waits for every worker process to exit; past ctx (or the shutdown
// ladder's own bound) the survivors are killed.
func (rt *Runtime) reapAll(ctx context.Context) error {
	bound := rt.cfg.ShutdownGrace + rt.cfg.KillAfter + time.Second
	wctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	if rt.procs.Wait(wctx) == nil {
		return nil
	}
	rt.procs.KillAll()
	kctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := rt.procs.Wait(kctx); err != nil {
		return fmt.Errorf("snakepit: stop: %d worker processes did not exit after SIGKILL", rt.procs.Len())
	}
	return nil
}
