// Package actors holds the runtime's actors, one file per part:
//
//   - The pool actor (pool.go), one per configured pool: it routes each call
//     to the least-loaded worker with free capacity and keeps a bounded
//     queue (queue.go), knows its workers (roster.go), places sessions
//     (sessions.go), recycles workers gracefully, a replacement first
//     (recycler.go), and supervises its workers: restart, backoff, restart
//     intensity (supervise.go).
//   - The lifecycle actor (lifecycle.go), a child of a pool with a recycle
//     policy: on its own ticker it asks the pool for its workers' facts,
//     samples their memory, and tells the pool which are due for a recycle
//     (age, calls served, memory).
//   - The worker actor (worker.go), a child of the pool, one per Python
//     process: it owns the process and its connection. Its runners
//     (runner.go, stream.go) run the calls; its watchdog (watchdog.go)
//     kills a process that is stuck or frozen; worker_rpc.go holds its
//     other RPCs.
//
// The settings are in settings.go, the errors in errors.go, the messages in
// messages.go (and, for the messages an actor sends itself, beside their
// handlers), the pool's report in status.go.
//
// No Receive here ever blocks: process starts, RPCs and shutdowns run in
// goroutines whose results come back as messages. Timers are our own
// (timers.go): protoactor's scheduler races under -race.
//
// Which messages are protobuf: the calls into a pool and their answers —
// CallRequest, CancelCall and CallReply with its Failure, package actors/pb
// (actors/proto). They carry nothing but data, so they could reach a pool
// from another process; none does today (nothing here uses protoactor's
// remote). Every other message is a local-only Go struct, because it
// carries what cannot leave the process: the runtime's requests and their
// answers (AwaitReady, Drain, StatusRequest, RecycleWorker, RecycleAll,
// OpenSession, CloseSession, DescribeQuery, StatsQuery) carry Go errors and
// actor PIDs; StreamOpened carries a live pyworker.Stream and a channel;
// the messages between a pool, its workers and itself carry pointers to the
// pool's own records.
package actors

import "github.com/asynkron/protoactor-go/actor"

// inlineDispatcher runs a mailbox on the goroutine of the sender that found
// it idle, instead of starting a goroutine per burst of messages (protoactor's
// default). No Receive here blocks, so a sender only ever pays for a few
// non-blocking handlers; a call saves a goroutine start, its stack growth and
// two scheduler hops. Mailboxes still process one message at a time.
var inlineDispatcher = actor.NewSynchronizedDispatcher(300)
