package snakepit

import "errors"

// CallOption changes how one Call or Stream is made.
type CallOption func(*callOpts)

type callOpts struct {
	retries int
	window  int
	session *Session // set by Session.Call and Session.Stream
}

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

// DefaultWindow is how many chunks of a stream may be in flight (produced
// by Python, not yet taken by the consumer) unless Window says otherwise.
const DefaultWindow = 32

// Window sets how many chunks of a Stream may be in flight between Python
// and the consumer (default DefaultWindow). The generator is not asked for
// another item while that many wait to be taken, so a slow consumer slows
// the producer, and memory stays bounded by n chunks. n is 1 to 65536; 0
// means the default. It does not apply to Call.
func Window(n int) CallOption {
	return func(o *callOpts) { o.window = n }
}
