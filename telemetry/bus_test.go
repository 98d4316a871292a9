package telemetry

import (
	"sync"
	"testing"
)

type testEvent struct{ n int }

func (testEvent) EventName() string { return "test" }

func TestBusDeliversInOrder(t *testing.T) {
	b := NewBus()
	var mu sync.Mutex
	var got []int
	sub := b.Subscribe(func(e Event) {
		mu.Lock()
		got = append(got, e.(testEvent).n)
		mu.Unlock()
	})
	for i := range 100 {
		b.Publish(testEvent{i})
	}
	sub.Close()
	sub.Close() // twice is fine
	if len(got) != 100 {
		t.Fatalf("got %d events, want 100", len(got))
	}
	for i, n := range got {
		if n != i {
			t.Fatalf("event %d is %d: out of order", i, n)
		}
	}
	b.Publish(testEvent{}) // after Close: nobody, no panic
	if b.Listening() {
		t.Fatal("Listening after the only subscriber closed")
	}
}

func TestBusNeverBlocksOnASlowSubscriber(t *testing.T) {
	b := NewBus()
	release := make(chan struct{})
	sub := b.Subscribe(func(Event) { <-release })
	for i := range SubscriberBuffer + 10 {
		b.Publish(testEvent{i})
	}
	close(release)
	sub.Close()
	if d := sub.Dropped(); d < 9 || d > 10 {
		t.Fatalf("dropped %d, want 9 or 10 (one may be in the handler)", d)
	}
}

func BenchmarkPublishNobodyListening(b *testing.B) {
	bus := NewBus()
	e := testEvent{1}
	for b.Loop() {
		bus.Publish(e)
	}
}

func BenchmarkPublishOneSubscriber(b *testing.B) {
	bus := NewBus()
	sub := bus.Subscribe(func(Event) {})
	defer sub.Close()
	e := RequestExecuted{Pool: "p", Worker: "p-0", Tool: "echo", Outcome: "ok"}
	for b.Loop() {
		bus.Publish(e)
	}
}

// TestPublishRacingClose: a publisher still holding a subscriber when its
// subscription closes must neither panic nor block (regression: Close used
// to close the channel a Publish could still send on).
func TestPublishRacingClose(t *testing.T) {
	for range 200 {
		b := NewBus()
		sub := b.Subscribe(func(Event) {})
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 50 {
					b.Publish(testEvent{i})
				}
			}()
		}
		sub.Close()
		wg.Wait()
	}
}
