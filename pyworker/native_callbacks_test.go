package pyworker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/pyworker/pb"
	"github.com/snakepit-go/snakepit/pyworker/wire"
)

// sendCallback sends a CALLBACK frame as a worker's tool would.
func sendCallback(c net.Conn, id uint64, name, parent string, args []byte, bin map[string][]byte) {
	parts, _ := wire.CallbackBody(name, parent, args, bin)
	send(c, wire.Callback, 0, id, bytes.Join(parts, nil))
}

type callbackAnswer struct {
	id   uint64
	raw  bool
	err  bool // CALLBACK_ERROR
	kind string
	msg  string
	body []byte
}

func answer(t *testing.T, f rawFrame) callbackAnswer {
	t.Helper()
	a := callbackAnswer{id: f.h.Stream, body: f.body, raw: f.h.Flags&wire.FlagRaw != 0}
	switch f.h.Type {
	case wire.CallbackResult:
	case wire.CallbackError:
		a.err = true
		var e struct{ Kind, Message string }
		if err := json.Unmarshal(f.body, &e); err != nil {
			t.Errorf("CALLBACK_ERROR body %q: %v", f.body, err)
		}
		a.kind, a.msg = e.Kind, e.Message
	default:
		t.Errorf("got %s, want a callback's answer", f.h.Type)
	}
	return a
}

func jsonReply(v string) *pb.CallbackReply {
	return &pb.CallbackReply{Outcome: &pb.CallbackReply_ResultJson{ResultJson: []byte(v)}}
}

// TestNativeCallbackContext: a callback runs on a goroutine of its own, not
// on the connection's reader (a handler blocking until a second callback
// ran would otherwise deadlock), with a context derived from its parent
// call's: the parent's deadline and values reach it, and its cancellation.
func TestNativeCallbackContext(t *testing.T) {
	leakCheck(t)
	answers := make(chan callbackAnswer, 2)
	ep := fakeWorker(t, func(c net.Conn) {
		acceptHello(t, c)
		frames := frameReader(c)
		f, _ := next(frames, 5*time.Second)
		m := parseExecute(t, f)
		sendCallback(c, 7, "first", m.ID, []byte(`{"x":1}`), nil)
		sendCallback(c, 8, "second", m.ID, nil, nil)
		for range 2 {
			a, _ := next(frames, 5*time.Second)
			answers <- answer(t, a)
		}
		send(c, wire.Result, 0, f.h.Stream, []byte(`"done"`))
		for range frames {
		}
	})
	type key struct{}
	deadline := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	secondRan := make(chan struct{})
	ep.Callbacks = func(ctx context.Context, parent string, req *pb.CallbackRequest) *pb.CallbackReply {
		dl, ok := ctx.Deadline()
		if parent != "req-1" || req.GetParentRequestId() != "req-1" || !ok || !dl.Equal(deadline) || ctx.Value(key{}) != "v" || ctx.Err() != nil {
			return callbackFailure("TEST", fmt.Sprintf("parent %q, deadline %v %v, value %v, err %v", parent, dl, ok, ctx.Value(key{}), ctx.Err()))
		}
		switch req.GetName() {
		case "first":
			select {
			case <-secondRan:
			case <-time.After(5 * time.Second):
				return callbackFailure("TEST", "the second callback never ran while the first was running")
			}
			return jsonReply(string(req.GetArgsJson()))
		default:
			close(secondRan)
			return &pb.CallbackReply{Outcome: &pb.CallbackReply_ResultRaw{ResultRaw: []byte("raw")}}
		}
	}
	n := dialNative(t, ep)
	ctx, cancel := context.WithDeadline(context.WithValue(context.Background(), key{}, "v"), deadline)
	defer cancel()
	r, err := n.Execute(ctx, &pb.ExecuteRequest{RequestId: "req-1", Tool: "callback"})
	if err != nil || string(r.GetResultJson()) != `"done"` {
		t.Fatalf("Execute: %v %v", r, err)
	}
	got := map[uint64]callbackAnswer{}
	for range 2 {
		a := <-answers
		got[a.id] = a
	}
	if a := got[7]; a.err || a.raw || string(a.body) != `{"x":1}` {
		t.Fatalf("callback 7 answered %+v", a)
	}
	if a := got[8]; a.err || !a.raw || string(a.body) != "raw" {
		t.Fatalf("callback 8 answered %+v", a)
	}
	assertForgotten(t, n)
}

// TestNativeCallbackParentCancelled: the handler's context ends when its
// parent call's does; a callback naming no call in flight gets a context
// that is already cancelled.
func TestNativeCallbackParentCancelled(t *testing.T) {
	leakCheck(t)
	handlerDone := make(chan error, 2)
	ep := fakeWorker(t, func(c net.Conn) {
		acceptHello(t, c)
		frames := frameReader(c)
		f, _ := next(frames, 5*time.Second)
		sendCallback(c, 1, "wait", parseExecute(t, f).ID, nil, nil)
		sendCallback(c, 2, "wait", "no-such-call", nil, nil)
		for range frames {
		}
	})
	entered := make(chan struct{}) // the callback of req-2 runs: the call may be cancelled
	ep.Callbacks = func(ctx context.Context, parent string, req *pb.CallbackRequest) *pb.CallbackReply {
		if parent == "req-2" {
			close(entered)
		}
		select {
		case <-ctx.Done():
			handlerDone <- fmt.Errorf("%s: %w", parent, context.Cause(ctx))
		case <-time.After(5 * time.Second):
			handlerDone <- errors.New(parent + ": the context did not end")
		}
		return jsonReply("null")
	}
	n := dialNative(t, ep)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-entered
		cancel()
	}()
	if _, err := n.Execute(ctx, &pb.ExecuteRequest{RequestId: "req-2", Tool: "callback"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Execute: %v", err)
	}
	for range 2 {
		err := <-handlerDone
		switch {
		case strings.HasPrefix(err.Error(), "req-2: ") && errors.Is(err, context.Canceled):
		case strings.HasPrefix(err.Error(), "no-such-call: ") && errors.Is(err, errParentOver):
		default:
			t.Fatalf("handler: %v", err)
		}
	}
}

// TestNativeCallbackReplies: what a handler returns, and what it cannot.
func TestNativeCallbackReplies(t *testing.T) {
	cases := []struct {
		name     string
		handler  CallbackFunc
		args     string
		wantKind string // "" for a result
		wantMsg  string
		wantBody string
	}{
		{name: "json", handler: func(context.Context, string, *pb.CallbackRequest) *pb.CallbackReply { return jsonReply(`[1,2]`) }, wantBody: "[1,2]"},
		{name: "no outcome", handler: func(context.Context, string, *pb.CallbackRequest) *pb.CallbackReply { return &pb.CallbackReply{} }, wantBody: "null"},
		{name: "no handler", wantKind: "UNKNOWN_CALLBACK", wantMsg: "no callbacks are registered"},
		{name: "error", handler: func(context.Context, string, *pb.CallbackRequest) *pb.CallbackReply {
			return callbackFailure("DEADLOCK", "the pool waits for this worker")
		}, wantKind: "DEADLOCK", wantMsg: "the pool waits"},
		{name: "error without a kind", handler: func(context.Context, string, *pb.CallbackRequest) *pb.CallbackReply {
			return callbackFailure("", "it broke")
		}, wantKind: "HANDLER_ERROR", wantMsg: "it broke"},
		{name: "nil reply", handler: func(context.Context, string, *pb.CallbackRequest) *pb.CallbackReply { return nil }, wantKind: "HANDLER_ERROR", wantMsg: "no reply"},
		{name: "panic", handler: func(context.Context, string, *pb.CallbackRequest) *pb.CallbackReply { panic("oh no") }, wantKind: "HANDLER_PANIC", wantMsg: "oh no"},
		{name: "too large", handler: func(context.Context, string, *pb.CallbackRequest) *pb.CallbackReply {
			return &pb.CallbackReply{Outcome: &pb.CallbackReply_ResultRaw{ResultRaw: make([]byte, 1<<20+1)}}
		}, wantKind: "TOO_LARGE", wantMsg: "over the message limit"},
		{name: "args not an object", handler: func(context.Context, string, *pb.CallbackRequest) *pb.CallbackReply { return jsonReply("1") },
			args: `[1]`, wantKind: "BAD_ARGUMENTS", wantMsg: "args must be a JSON object"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			got := make(chan callbackAnswer, 1)
			ep := fakeWorker(t, func(c net.Conn) {
				acceptHello(t, c)
				frames := frameReader(c)
				sendCallback(c, 3, "f", "", []byte(tc.args), nil)
				f, _ := next(frames, 5*time.Second)
				got <- answer(t, f)
				// The connection goes on.
				f, _ = next(frames, 5*time.Second)
				send(c, wire.Reply, 0, f.h.Stream, []byte(`{"ok":true}`))
				for range frames {
				}
			})
			ep.Callbacks = tc.handler
			n := dialNative(t, ep)
			a := <-got
			if a.id != 3 || (tc.wantKind != "") != a.err || a.kind != tc.wantKind || !strings.Contains(a.msg, tc.wantMsg) ||
				(tc.wantKind == "" && string(a.body) != tc.wantBody) {
				t.Fatalf("answer %+v (body %.40q)", a, a.body)
			}
			if h, err := n.Health(context.Background()); err != nil || !h.GetOk() {
				t.Fatalf("Health after the callback: %v %v", h, err)
			}
			assertForgotten(t, n)
		})
	}
}

// TestNativeCallbackBadFrames: a CALLBACK body that does not parse, or an
// id that is still open, ends the connection.
func TestNativeCallbackBadFrames(t *testing.T) {
	cases := map[string]func(c net.Conn){
		"unparseable": func(c net.Conn) { send(c, wire.Callback, 0, 1, []byte{0, 0, 0, 9, '{'}) },
		"id still open": func(c net.Conn) {
			sendCallback(c, 5, "block", "", nil, nil)
			sendCallback(c, 5, "block", "", nil, nil)
		},
	}
	for name, write := range cases {
		t.Run(name, func(t *testing.T) {
			leakCheck(t)
			told := make(chan string, 1)
			release := make(chan struct{})
			ep := fakeWorker(t, func(c net.Conn) {
				acceptHello(t, c)
				frames := frameReader(c)
				write(c)
				for f := range frames {
					if f.h.Type == wire.ProtocolError {
						told <- string(f.body)
					}
				}
				close(told)
			})
			ep.Callbacks = func(ctx context.Context, _ string, _ *pb.CallbackRequest) *pb.CallbackReply {
				<-release
				return jsonReply("1")
			}
			n := dialNative(t, ep)
			waitClosed(t, n.done, "the connection")
			close(release)
			if msg := <-told; msg == "" || !strings.Contains(n.failure().Error(), "bad frame") {
				t.Fatalf("worker told %q; connection failed with %v", msg, n.failure())
			}
		})
	}
}

// TestNativeCallbackLargeRaw: a 10 MB bytes argument and a 10 MB raw
// result cross byte-exact.
func TestNativeCallbackLargeRaw(t *testing.T) {
	leakCheck(t)
	data := make([]byte, 10<<20)
	_, _ = rand.Read(data)
	got := make(chan callbackAnswer, 1)
	ep := fakeWorker(t, func(c net.Conn) {
		acceptHello(t, c)
		frames := frameReader(c)
		sendCallback(c, 11, "reverse", "", []byte(`{"label":"x"}`), map[string][]byte{"data": data})
		f, _ := next(frames, 10*time.Second)
		got <- answer(t, f)
		for range frames {
		}
	})
	ep.MaxMessageBytes = 12 << 20
	ep.Callbacks = func(_ context.Context, _ string, req *pb.CallbackRequest) *pb.CallbackReply {
		in := req.GetBinaryArgs()["data"]
		if !bytes.Equal(in, data) || string(req.GetArgsJson()) != `{"label":"x"}` {
			return callbackFailure("TEST", fmt.Sprintf("got %d bytes, args %s", len(in), req.GetArgsJson()))
		}
		out := make([]byte, len(in))
		for i, b := range in {
			out[len(in)-1-i] = b
		}
		return &pb.CallbackReply{Outcome: &pb.CallbackReply_ResultRaw{ResultRaw: out}}
	}
	n := dialNative(t, ep)
	a := <-got
	if a.err || !a.raw || len(a.body) != len(data) {
		t.Fatalf("answer: err %v raw %v kind %s %s, %d bytes", a.err, a.raw, a.kind, a.msg, len(a.body))
	}
	for i := range data {
		if a.body[len(data)-1-i] != data[i] {
			t.Fatalf("byte %d differs", i)
		}
	}
	assertForgotten(t, n)
}

// TestNativeCallbacksConcurrent: 100 callbacks in flight at once, answered
// out of order, each matched to its id.
func TestNativeCallbacksConcurrent(t *testing.T) {
	leakCheck(t)
	const count = 100
	got := make(chan map[uint64]string, 1)
	ep := fakeWorker(t, func(c net.Conn) {
		acceptHello(t, c)
		frames := frameReader(c)
		f, _ := next(frames, 5*time.Second)
		parent := parseExecute(t, f).ID
		for i := range count {
			sendCallback(c, uint64(5000+i), "square", parent, fmt.Appendf(nil, `{"i":%d}`, i), nil)
		}
		answers := map[uint64]string{}
		for range count {
			f, ok := next(frames, 10*time.Second)
			if !ok {
				break
			}
			a := answer(t, f)
			answers[a.id] = string(a.body)
		}
		got <- answers
		send(c, wire.Result, 0, f.h.Stream, []byte(`"ok"`))
		for range frames {
		}
	})
	var mu sync.Mutex
	inFlight, most := 0, 0
	ep.Callbacks = func(ctx context.Context, _ string, req *pb.CallbackRequest) *pb.CallbackReply {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		var args struct{ I int }
		_ = json.Unmarshal(req.GetArgsJson(), &args)
		time.Sleep(time.Duration((count-args.I)%10) * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		return jsonReply(fmt.Sprint(args.I * args.I))
	}
	n := dialNative(t, ep)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.Execute(ctx, &pb.ExecuteRequest{RequestId: "many", Tool: "callback"}); err != nil {
		t.Fatal(err)
	}
	answers := <-got
	if len(answers) != count {
		t.Fatalf("%d answers", len(answers))
	}
	for i := range count {
		if a := answers[uint64(5000+i)]; a != fmt.Sprint(i*i) {
			t.Fatalf("callback %d answered %q", 5000+i, a)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if most < 2 {
		t.Fatalf("at most %d callbacks ran at once", most)
	}
	assertForgotten(t, n)
}

// TestNativeCallbackOfAStream: a streaming call is a parent too, until its
// final frame.
func TestNativeCallbackOfAStream(t *testing.T) {
	leakCheck(t)
	ep := fakeWorker(t, func(c net.Conn) {
		acceptHello(t, c)
		frames := frameReader(c)
		f, _ := next(frames, 5*time.Second)
		sendCallback(c, 1, "f", parseExecute(t, f).ID, nil, nil)
		a, _ := next(frames, 5*time.Second)
		send(c, wire.Chunk, a.h.Flags, f.h.Stream, a.body)
		send(c, wire.Result, 0, f.h.Stream, nil)
		for range frames {
		}
	})
	ep.Callbacks = func(ctx context.Context, parent string, _ *pb.CallbackRequest) *pb.CallbackReply {
		if ctx.Err() != nil {
			return jsonReply(`"cancelled"`)
		}
		return jsonReply(`"` + parent + `"`)
	}
	n := dialNative(t, ep)
	s, err := n.ExecuteStream(context.Background(), &pb.ExecuteRequest{RequestId: "st-1", Tool: "callback"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := s.Next(context.Background()); err != nil || string(c.Data) != `"st-1"` {
		t.Fatalf("chunk %q %v", c.Data, err)
	}
	waitClosed(t, s.Done(), "Done")
	assertForgotten(t, n)
}
