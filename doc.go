// Package snakepit runs pools of Python worker processes under OTP-style
// supervision and lets Go code call Python functions ("tools") in them.
//
//	rt, err := snakepit.Start(ctx, snakepit.Config{
//		Pools: []snakepit.PoolConfig{{Name: "default", Adapter: "examples.textstats", Size: 4}},
//	})
//	defer rt.Stop(ctx)
//	res, err := rt.Call(ctx, "default", "word_count", map[string]any{"text": "a b c"})
//	var n int
//	err = res.Decode(&n)
//
// Every pool is a protoactor-go actor that routes calls to the least-loaded
// worker with free capacity and queues them (bounded) when all are busy. Each
// worker actor owns one Python process, started without a shell in its own
// process group with a parent-death signal, reached over a Unix socket in a
// private directory (framed messages, or gRPC per pool), with a per-runtime
// token on every call. A
// worker whose process dies is restarted with exponential backoff; a pool
// whose workers fail faster than its restart intensity allows is reported
// failed by Health. A worker whose adapter cannot be imported fails Start
// with the Python traceback instead of looping.
//
// Every Call ends with a result or a typed error (see Call) within its
// context's deadline. Stop drains calls and leaves no Python process behind.
//
// Beyond one request and one answer: Stream ranges over the items a Python
// generator yields, under a bounded window (Go 1.23 iterators); Register
// exposes Go functions that tools call with snakepit.call; OpenSession keeps
// a line of calls, and Python state, on one worker
// (docs/streams-callbacks-sessions.md).
//
// This package is the public API; the machinery lives in actors/ (pool and
// worker actors), supervision/ (restart decisions), profiles/ (how workers
// are made), telemetry/ (events, metrics, the inspector, log routing) and
// pyworker/ (the Python process, its protocol and the Python package).
package snakepit

//go:generate go run ./internal/configdoc/cmd
