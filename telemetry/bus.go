package telemetry

import (
	"sync"
	"sync/atomic"
)

// Event is one typed event of the runtime. Every event type is a struct in
// this package; a subscriber switches on its type.
type Event interface {
	// EventName is the event's stable name, e.g. "worker.recycled".
	EventName() string
}

// SubscriberBuffer is how many events a slow subscriber may fall behind
// before further events to it are dropped (and counted).
const SubscriberBuffer = 1024

// Bus delivers events to subscribers. Publish never blocks and costs one
// atomic load when nobody listens; each subscriber runs on its own
// goroutine, in publication order.
type Bus struct {
	mu   sync.Mutex
	subs atomic.Pointer[[]*subscriber]
}

type subscriber struct {
	ch      chan Event // never closed: a Publish may still hold it
	quit    chan struct{}
	dropped atomic.Int64
	done    chan struct{}
}

// NewBus returns an empty bus.
func NewBus() *Bus { return &Bus{} }

// Publish hands e to every subscriber without waiting for any of them. A
// subscriber whose buffer is full misses e (see Subscription.Dropped).
func (b *Bus) Publish(e Event) {
	subs := b.subs.Load()
	if subs == nil {
		return
	}
	for _, s := range *subs {
		select {
		case s.ch <- e:
		default:
			s.dropped.Add(1)
		}
	}
}

// Listening reports whether anyone subscribed: a publisher may skip
// building an expensive event when nobody listens.
func (b *Bus) Listening() bool {
	subs := b.subs.Load()
	return subs != nil && len(*subs) > 0
}

// Subscription is one subscriber's handle.
type Subscription struct {
	bus  *Bus
	sub  *subscriber
	once sync.Once
}

// Subscribe calls fn with every event published from now on, one at a time
// on a goroutine of its own, until the subscription is closed.
func (b *Bus) Subscribe(fn func(Event)) *Subscription {
	s := &subscriber{ch: make(chan Event, SubscriberBuffer), quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case e := <-s.ch:
				fn(e)
			case <-s.quit:
				for { // what was delivered before Close
					select {
					case e := <-s.ch:
						fn(e)
					default:
						return
					}
				}
			}
		}
	}()
	b.mu.Lock()
	defer b.mu.Unlock()
	var next []*subscriber
	if cur := b.subs.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, s)
	b.subs.Store(&next)
	return &Subscription{bus: b, sub: s}
}

// Close stops delivery, waits until fn has returned for the events already
// delivered, and is safe to call more than once. It must not be called from
// fn itself.
func (s *Subscription) Close() {
	s.once.Do(func() {
		s.bus.mu.Lock()
		var next []*subscriber
		for _, o := range *s.bus.subs.Load() {
			if o != s.sub {
				next = append(next, o)
			}
		}
		s.bus.subs.Store(&next)
		close(s.sub.quit)
		s.bus.mu.Unlock()
		<-s.sub.done
	})
}

// Dropped counts the events this subscriber missed because it fell more
// than SubscriberBuffer events behind.
func (s *Subscription) Dropped() int64 { return s.sub.dropped.Load() }
