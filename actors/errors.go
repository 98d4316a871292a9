package actors

import (
	"errors"
	"fmt"

	"github.com/snakepit-go/snakepit/pyworker"
)

// Errors of the pool's requests, matched with errors.Is (the root package
// re-exports them).
var (
	// ErrUnknownWorker: no worker of that id in the pool.
	ErrUnknownWorker = errors.New("unknown worker")
	// ErrPoolUnavailable: the pool has failed or is stopping.
	ErrPoolUnavailable = errors.New("pool unavailable")
	// ErrSessionLost: the session's worker is gone, or the session was
	// closed or expired.
	ErrSessionLost = errors.New("session lost")
	// ErrSessionLimit: the pool (MaxSessions) or every worker
	// (MaxPerWorker) holds as many sessions as it may.
	ErrSessionLimit = errors.New("session limit reached")
)

// poolFailedError is ErrPoolUnavailable for a pool that gave up.
func poolFailedError(pool, reason string) error {
	return fmt.Errorf("%w: %s", ErrPoolUnavailable, poolFailedText(pool, reason))
}

// poolStoppingError is ErrPoolUnavailable for a pool that is stopping.
func poolStoppingError(pool string) error {
	return fmt.Errorf("%w: %s", ErrPoolUnavailable, poolStoppingText(pool))
}

// The texts of the pool's unavailability, shared by its errors and by the
// failures of the calls it refuses.
func poolFailedText(pool, reason string) string {
	return fmt.Sprintf("pool %q has failed: %s", pool, reason)
}
func poolStoppingText(pool string) string { return fmt.Sprintf("pool %q is stopping", pool) }

// Reasons a worker actor fails with: the panic value its supervisor (the
// pool, supervise.go) sees.
type (
	// crashed: the Python process died; killedBy says why the runtime killed
	// it, "" when it died on its own.
	crashed struct {
		status   pyworker.ExitStatus
		killedBy string
		stderr   string // the last lines it wrote to stderr
		stacks   string // dumped before a kill for being stuck
	}
	// bootFailed: the worker cannot start; restarting would not help.
	bootFailed struct{ err error }
	// launchError: the worker did not start for a reason that may pass.
	launchError struct{ err error }
)

// reasonError is a failure reason as an error, keeping the wrapped one.
func reasonError(reason any) error {
	switch r := reason.(type) {
	case *launchError:
		return r.err
	case *bootFailed:
		return r.err
	}
	return errors.New(exitOf(reason).String())
}
