// Package testkit holds the helpers the project's tests share: waiting for
// a condition the code under test reaches by itself, and checking that a
// test leaves no goroutine behind. Test code only.
package testkit

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// pollEvery is how often WaitFor and NoLeaks look again.
const pollEvery = 5 * time.Millisecond

// WaitFor polls cond until it holds, failing t (Fatal) once within has
// passed: a wait for a state the code reaches by itself, never a guess at
// how long that takes.
func WaitFor(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(pollEvery)
	}
}

// NoLeaks records the goroutines running now and returns the check: it
// fails t (Error) if goroutines started since are still running once
// settle has passed (they get that long to end: protoactor's dead-letter
// throttle, for one, keeps a goroutine for a one-second period).
func NoLeaks(t testing.TB, settle time.Duration) func() {
	before := goleak.IgnoreCurrent()
	return func() {
		t.Helper()
		var err error
		for end := time.Now().Add(settle); ; time.Sleep(10 * pollEvery) {
			if err = goleak.Find(before); err == nil || time.Now().After(end) {
				break
			}
		}
		if err != nil {
			t.Error(err)
		}
	}
}
