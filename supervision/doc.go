// Package supervision holds the pure decision logic of OTP-style supervision:
// restart intensity (at most N restarts within a period), exponential backoff
// with jitter between restarts, and the decision to give up and escalate.
//
// It owns no actors, processes or goroutines and never sleeps: time comes from
// an injected Clock, so every decision is table-testable. The actors package
// applies these decisions.
package supervision
