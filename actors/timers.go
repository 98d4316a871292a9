package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Our own timers: protoactor's scheduler races under -race. Each sends its
// actor a message from a goroutine; the actor decides when it arrives.

// sendAfter sends msg to pid once d has passed.
func sendAfter(system *actor.ActorSystem, pid *actor.PID, d time.Duration, msg any) *time.Timer {
	return time.AfterFunc(d, func() { system.Root.Send(pid, msg) })
}

// tickSelf sends msg to the actor every interval, from a goroutine, until
// the returned channel is closed.
func tickSelf(ctx actor.Context, every time.Duration, msg any) chan struct{} {
	done := make(chan struct{})
	self, root := ctx.Self(), ctx.ActorSystem().Root
	t := time.NewTicker(every)
	go func() {
		defer t.Stop()
		for {
			select {
			case <-t.C:
				root.Send(self, msg)
			case <-done:
				return
			}
		}
	}()
	return done
}

// timerSet is the pool's pending one-shot timers (restart backoffs, drain
// timeouts), by key; a timer's message handler calls fired with its key.
type timerSet map[string]*time.Timer

func (t timerSet) after(system *actor.ActorSystem, self *actor.PID, key string, d time.Duration, msg any) {
	t[key] = sendAfter(system, self, d, msg)
}

func (t timerSet) fired(key string)        { delete(t, key) }
func (t timerSet) pending(key string) bool { _, ok := t[key]; return ok }

func (t timerSet) stop(key string) {
	if tm := t[key]; tm != nil {
		tm.Stop()
		delete(t, key)
	}
}

func (t timerSet) stopAll() {
	for _, tm := range t {
		tm.Stop()
	}
}

// The keys of a worker's timers.
func restartKey(pid *actor.PID) string      { return pid.Id }
func drainKey(pid *actor.PID) string        { return "drain:" + pid.Id }
func sessionDrainKey(pid *actor.PID) string { return "sessions:" + pid.Id }
