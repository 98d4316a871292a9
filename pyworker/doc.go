// Package pyworker owns everything about one Python worker process: finding an
// interpreter that can run the worker, starting it (no shell, its own process
// group, a parent-death signal), the one-line handshake on a pipe of its own,
// re-logging its output through hclog, and talking to it through a Transport.
//
// It knows nothing about pools, routing or supervision; those live in actors/.
// It must not block forever: every wait here is bounded by a context or a
// timeout given by the caller.
package pyworker
