package snakepit

import "errors"

// CallOption changes how one Call is made.
type CallOption func(*callOpts)

type callOpts struct{ retries int }

func callOptions(opts []CallOption) callOpts {
	var o callOpts
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Idempotent marks a call safe to run more than once: when the worker running
// it dies under it (ErrWorkerCrashed) or its connection fails
// (ErrTransport), it is sent again, to whichever worker is free (another one,
// or the crashed one's replacement), up to retries more times within the
// call's deadline. Calls without it are never retried: the tool may have had
// effects before the worker died.
func Idempotent(retries int) CallOption {
	return func(o *callOpts) { o.retries = max(retries, 0) }
}

// retryable reports whether an idempotent call that ended with err may be
// sent again.
func retryable(err error) bool {
	return errors.Is(err, ErrWorkerCrashed) || errors.Is(err, ErrTransport)
}
