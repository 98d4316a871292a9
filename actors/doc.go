// Package actors holds the runtime's actors: one pool actor per configured
// pool (routing by free worker capacity, a bounded queue, supervision of its
// workers) and one worker actor per Python process (owning the process and its
// connection).
//
// No Receive here ever blocks: process starts, RPCs and shutdowns run in
// goroutines whose results come back as messages. Requests into a pool and
// their replies are the protobuf messages of package actors/pb.
package actors

import "github.com/asynkron/protoactor-go/actor"

// inlineDispatcher runs a mailbox on the goroutine of the sender that found
// it idle, instead of starting a goroutine per burst of messages (protoactor's
// default). No Receive here blocks, so a sender only ever pays for a few
// non-blocking handlers; a call saves a goroutine start, its stack growth and
// two scheduler hops. Mailboxes still process one message at a time.
var inlineDispatcher = actor.NewSynchronizedDispatcher(300)
