package actors

import (
	"strconv"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// ReplyBox is a PID that delivers the first message sent to it on a channel:
// a future without protoactor's timer, which a caller can wait on together
// with its context.
type ReplyBox struct {
	pid    *actor.PID
	system *actor.ActorSystem
	ch     chan any
}

var boxSeq atomic.Uint64

// NewReplyBox registers a box; Release it when done.
func NewReplyBox(system *actor.ActorSystem) *ReplyBox {
	b := &ReplyBox{system: system, ch: make(chan any, 1)}
	b.pid, _ = system.ProcessRegistry.Add(boxProcess{b}, "reply$"+strconv.FormatUint(boxSeq.Add(1), 36))
	return b
}

// PID is the address to reply to.
func (b *ReplyBox) PID() *actor.PID { return b.pid }

// C delivers the reply.
func (b *ReplyBox) C() <-chan any { return b.ch }

// Release unregisters the box; later replies go nowhere.
func (b *ReplyBox) Release() { b.system.ProcessRegistry.Remove(b.pid) }

type boxProcess struct{ b *ReplyBox }

func (p boxProcess) SendUserMessage(_ *actor.PID, message any) {
	select {
	case p.b.ch <- actor.UnwrapEnvelopeMessage(message):
	default: // only the first reply counts
	}
}
func (boxProcess) SendSystemMessage(*actor.PID, any) {}
func (boxProcess) Stop(*actor.PID)                   {}
