package pyworker

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/internal/testkit"
	"github.com/snakepit-go/snakepit/pyworker/pb"
	"github.com/snakepit-go/snakepit/pyworker/wire"
)

// leakCheck fails the test if goroutines it started outlive it. Call it
// first: its check runs after every later cleanup (the fake worker's too).
func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(testkit.NoLeaks(t, 2*time.Second))
}

type rawFrame struct {
	h    wire.Header
	body []byte
}

// frameReader reads the runtime's frames on its own goroutine, so a fake
// worker can wait for them with a timeout. The channel closes at EOF.
func frameReader(c net.Conn) <-chan rawFrame {
	out := make(chan rawFrame, 1024)
	go func() {
		defer close(out)
		hdr := make([]byte, wire.HeaderSize)
		for {
			h, body, err := wire.ReadFrame(c, hdr, 64<<20)
			if err != nil {
				return
			}
			out <- rawFrame{h, body}
		}
	}()
	return out
}

// next waits for the runtime's next frame (ok false: none came in time, or
// the connection ended).
func next(frames <-chan rawFrame, within time.Duration) (rawFrame, bool) {
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case f, ok := <-frames:
		return f, ok
	case <-t.C:
		return rawFrame{}, false
	}
}

// executeMeta decodes an EXECUTE body's meta.
type executeMeta struct {
	ID      string          `json:"id"`
	Tool    string          `json:"tool"`
	Session string          `json:"session"`
	Stream  int             `json:"stream"`
	Args    json.RawMessage `json:"args"`
}

func parseExecute(t *testing.T, f rawFrame) executeMeta {
	t.Helper()
	var m executeMeta
	if f.h.Type != wire.Execute || len(f.body) < 4 {
		t.Errorf("want EXECUTE, got %s", f.h.Type)
		return m
	}
	n := binary.BigEndian.Uint32(f.body)
	if err := json.Unmarshal(f.body[4:4+n], &m); err != nil {
		t.Errorf("EXECUTE meta %q: %v", f.body[4:4+n], err)
	}
	return m
}

// produce plays a streaming tool that yields chunks from to to-1, holding
// credit to start with: it never sends beyond its credit, and it checks that
// the runtime never grants more than window chunks outstanding.
func produce(t *testing.T, c net.Conn, frames <-chan rawFrame, stream uint64, window, credit, from, to int) {
	handle := func(f rawFrame) {
		if f.h.Type != wire.Credit || f.h.Stream != stream {
			t.Errorf("fake worker: got %s on stream %d, want CREDIT on %d", f.h.Type, f.h.Stream, stream)
			return
		}
		k, err := wire.ParseCredit(f.body)
		if err != nil {
			t.Errorf("fake worker: %v", err)
		}
		credit += int(k)
		if credit > window {
			t.Errorf("fake worker: holds a credit of %d chunks, over the window of %d", credit, window)
		}
	}
	for i := from; i < to; i++ {
		for credit == 0 {
			f, ok := next(frames, 5*time.Second)
			if !ok {
				t.Errorf("fake worker: no CREDIT after %d chunks", i)
				return
			}
			handle(f)
		}
		send(c, wire.Chunk, 0, stream, fmt.Appendf(nil, "%d", i))
		credit--
		for drained := false; !drained; {
			select {
			case f, ok := <-frames:
				if !ok {
					t.Errorf("fake worker: the connection ended after %d chunks", i+1)
					return
				}
				handle(f)
			default:
				drained = true
			}
		}
	}
}

// drain reads until the runtime closes the connection.
func drain(c net.Conn) { _, _ = io.Copy(io.Discard, c) }

func dialNative(t *testing.T, ep Endpoint) *nativeConn {
	t.Helper()
	conn, err := dial(t, ep)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn.(*nativeConn)
}

// assertForgotten: the connection holds nothing of calls that are over.
func assertForgotten(t *testing.T, n *nativeConn) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.pending) != 0 || len(n.parents) != 0 || len(n.openCallbacks) != 0 {
		t.Fatalf("left behind: %d pending, %d parents, %d open callbacks", len(n.pending), len(n.parents), len(n.openCallbacks))
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: not closed", what)
	}
}

// TestNativeStreamCredits: a stream delivers every chunk in order, then
// io.EOF; the runtime grants credit as its consumer takes chunks, never more
// than the window outstanding, and none while the consumer takes nothing.
func TestNativeStreamCredits(t *testing.T) {
	for _, window := range []int{1, 2, 3, 8} {
		t.Run(fmt.Sprint("window ", window), func(t *testing.T) {
			leakCheck(t)
			const chunks = 40
			idle := make(chan bool, 1)
			ep := fakeWorker(t, func(c net.Conn) {
				acceptHello(t, c)
				frames := frameReader(c)
				f, _ := next(frames, 5*time.Second)
				m := parseExecute(t, f)
				if m.Stream != window || m.Tool != "count" || m.Session != "s-1" || string(m.Args) != `{"n":40}` {
					t.Errorf("EXECUTE meta %+v", m)
				}
				// A full window sent; the consumer takes nothing yet: no CREDIT may come.
				for i := range window {
					send(c, wire.Chunk, 0, f.h.Stream, fmt.Appendf(nil, "%d", i))
				}
				_, got := next(frames, 100*time.Millisecond)
				idle <- !got
				produce(t, c, frames, f.h.Stream, window, 0, window, chunks)
				send(c, wire.Result, 0, f.h.Stream, nil)
				for range frames { // until the runtime closes
				}
			})
			n := dialNative(t, ep)
			s, err := n.ExecuteStream(context.Background(), &pb.ExecuteRequest{RequestId: "r1", Tool: "count",
				ArgsJson: []byte(`{"n":40}`), SessionId: "s-1"}, window)
			if err != nil {
				t.Fatal(err)
			}
			if !<-idle {
				t.Fatal("the runtime granted credit before its consumer took a chunk")
			}
			for i := range chunks {
				c, err := s.Next(context.Background())
				if err != nil || string(c.Data) != fmt.Sprint(i) || c.Raw {
					t.Fatalf("chunk %d: %q raw=%v %v", i, c.Data, c.Raw, err)
				}
			}
			if _, err := s.Next(context.Background()); err != io.EOF {
				t.Fatalf("after the last chunk: %v, want io.EOF", err)
			}
			waitClosed(t, s.Done(), "Done")
			if s.Err() != nil {
				t.Fatalf("Err = %v, want nil", s.Err())
			}
			assertForgotten(t, n)
		})
	}
}

// TestNativeStreamErrorKeepsChunks: chunks sent before the tool raised stay
// valid; the ERROR comes after them as a *RemoteError; raw chunks keep their flag.
func TestNativeStreamErrorKeepsChunks(t *testing.T) {
	leakCheck(t)
	ep := fakeWorker(t, func(c net.Conn) {
		acceptHello(t, c)
		h, _ := recv(t, c)
		send(c, wire.Chunk, 0, h.Stream, []byte(`"a"`))
		send(c, wire.Chunk, wire.FlagRaw, h.Stream, []byte{0, 1})
		send(c, wire.Error, 0, h.Stream, []byte(`{"kind":"TOOL_EXCEPTION","type":"ValueError","message":"boom"}`))
		drain(c)
	})
	n := dialNative(t, ep)
	s, err := n.ExecuteStream(context.Background(), &pb.ExecuteRequest{Tool: "fail_after"}, 4)
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, s.Done(), "Done") // the chunks wait in the buffer
	var re *RemoteError
	if !errors.As(s.Err(), &re) || re.Info.GetKind() != pb.ErrorInfo_KIND_TOOL_EXCEPTION || re.Info.GetMessage() != "boom" {
		t.Fatalf("Err = %v", s.Err())
	}
	c1, err1 := s.Next(context.Background())
	c2, err2 := s.Next(context.Background())
	_, err3 := s.Next(context.Background())
	if string(c1.Data) != `"a"` || c1.Raw || string(c2.Data) != "\x00\x01" || !c2.Raw || err1 != nil || err2 != nil || !errors.As(err3, &re) {
		t.Fatalf("got %q %v / %q %v / %v", c1.Data, err1, c2.Data, err2, err3)
	}
	assertForgotten(t, n)
}

// TestNativeChunkBeyondCreditFailsTheConnection: a CHUNK the worker had no
// credit for is a bad frame: the worker is told, the connection ends, and
// every stream and call on it fails.
func TestNativeChunkBeyondCreditFailsTheConnection(t *testing.T) {
	leakCheck(t)
	told := make(chan string, 1)
	ep := fakeWorker(t, func(c net.Conn) {
		acceptHello(t, c)
		h, _ := recv(t, c)
		for i := range 3 { // window 2
			send(c, wire.Chunk, 0, h.Stream, fmt.Appendf(nil, "%d", i))
		}
		if f, body := recv(t, c); f.Type == wire.ProtocolError {
			told <- string(body)
		}
		close(told)
	})
	n := dialNative(t, ep)
	s, err := n.ExecuteStream(context.Background(), &pb.ExecuteRequest{Tool: "count"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, s.Done(), "Done")
	if msg := <-told; !strings.Contains(msg, "beyond the stream's credit") {
		t.Fatalf("the worker was told %q", msg)
	}
	if err := s.Err(); err == nil || !errors.Is(err, wire.ErrBadFrame) || !strings.Contains(err.Error(), "beyond the stream's credit") {
		t.Fatalf("Err = %v", err)
	}
	for i := 0; ; i++ { // the chunks within the credit are still handed out
		c, err := s.Next(context.Background())
		if err != nil {
			if i != 2 || !errors.Is(err, wire.ErrBadFrame) {
				t.Fatalf("after %d chunks: %v", i, err)
			}
			break
		}
		if string(c.Data) != fmt.Sprint(i) {
			t.Fatalf("chunk %d = %q", i, c.Data)
		}
	}
	if _, err := n.Execute(context.Background(), &pb.ExecuteRequest{Tool: "echo"}); err == nil {
		t.Fatal("a call on the failed connection succeeded")
	}
	assertForgotten(t, n)
}

// TestNativeStreamCancel: Cancel sends one CANCEL however often it is
// called; the stream stays open until the worker acknowledges; the
// acknowledgement (ERROR CANCELLED) ends it and closes Done.
func TestNativeStreamCancel(t *testing.T) {
	leakCheck(t)
	gotCancel, ack := make(chan bool, 1), make(chan struct{})
	extra := make(chan []wire.Type, 1)
	ep := fakeWorker(t, func(c net.Conn) {
		acceptHello(t, c)
		frames := frameReader(c)
		f, _ := next(frames, 5*time.Second)
		send(c, wire.Chunk, 0, f.h.Stream, []byte("1"))
		cf, _ := next(frames, 5*time.Second)
		if cf.h.Type == wire.Credit { // for the chunk taken
			cf, _ = next(frames, 5*time.Second)
		}
		gotCancel <- cf.h.Type == wire.Cancel && cf.h.Stream == f.h.Stream
		select {
		case <-ack:
		case <-time.After(5 * time.Second):
		}
		send(c, wire.Error, 0, f.h.Stream, []byte(`{"kind":"CANCELLED","message":"cancelled"}`))
		var more []wire.Type
		for {
			f, ok := next(frames, 200*time.Millisecond)
			if !ok {
				break
			}
			more = append(more, f.h.Type)
		}
		extra <- more
	})
	n := dialNative(t, ep)
	s, err := n.ExecuteStream(context.Background(), &pb.ExecuteRequest{RequestId: "r", Tool: "count"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := s.Next(context.Background()); err != nil || string(c.Data) != "1" {
		t.Fatalf("first chunk: %q %v", c.Data, err)
	}
	s.Cancel()
	s.Cancel()
	if !<-gotCancel {
		t.Fatal("the worker got no CANCEL for the stream")
	}
	select {
	case <-s.Done():
		t.Fatal("Done closed before the worker acknowledged the cancel")
	case <-time.After(50 * time.Millisecond):
	}
	close(ack)
	var re *RemoteError
	if _, err := s.Next(context.Background()); !errors.As(err, &re) || re.Info.GetKind() != pb.ErrorInfo_KIND_CANCELLED {
		t.Fatalf("after the ack: %v, want a *RemoteError CANCELLED", err)
	}
	waitClosed(t, s.Done(), "Done")
	s.Cancel() // over: nothing more is sent
	if more := <-extra; len(more) != 0 {
		t.Fatalf("after the CANCEL the worker got %v, want nothing", more)
	}
	assertForgotten(t, n)
}

// TestNativeStreamContextEndSendsCancel: the ExecuteStream context ending
// before the stream did sends CANCEL; the stream then ends with the ack.
// Next's own context only bounds its wait.
func TestNativeStreamContextEndSendsCancel(t *testing.T) {
	leakCheck(t)
	ep := fakeWorker(t, func(c net.Conn) {
		acceptHello(t, c)
		frames := frameReader(c)
		f, _ := next(frames, 5*time.Second)
		cf, ok := next(frames, 5*time.Second)
		if !ok || cf.h.Type != wire.Cancel || cf.h.Stream != f.h.Stream {
			t.Errorf("fake worker: got %v %s, want CANCEL", ok, cf.h.Type)
		}
		send(c, wire.Error, 0, f.h.Stream, []byte(`{"kind":"CANCELLED","message":"cancelled"}`))
		for range frames {
		}
	})
	n := dialNative(t, ep)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	s, err := n.ExecuteStream(ctx, &pb.ExecuteRequest{Tool: "count"}, 4)
	if err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancelShort()
	if _, err := s.Next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next with a short context: %v", err)
	}
	var re *RemoteError
	if _, err := s.Next(context.Background()); !errors.As(err, &re) || re.Info.GetKind() != pb.ErrorInfo_KIND_CANCELLED {
		t.Fatalf("got %v, want the ack of the cancel", err)
	}
	waitClosed(t, s.Done(), "Done")
	assertForgotten(t, n)
}

// TestNativeStreamConnectionEnd: a connection that ends mid-stream closes
// Done with the transport error.
func TestNativeStreamConnectionEnd(t *testing.T) {
	leakCheck(t)
	ep := fakeWorker(t, func(c net.Conn) {
		acceptHello(t, c)
		h, _ := recv(t, c)
		send(c, wire.Chunk, 0, h.Stream, []byte("1"))
	}) // closes the connection
	n := dialNative(t, ep)
	s, err := n.ExecuteStream(context.Background(), &pb.ExecuteRequest{Tool: "count"}, 4)
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, s.Done(), "Done")
	if c, err := s.Next(context.Background()); err != nil || string(c.Data) != "1" {
		t.Fatalf("the chunk before the end: %q %v", c.Data, err)
	}
	if _, err := s.Next(context.Background()); err == nil || err == io.EOF || s.Err() == nil {
		t.Fatalf("after the end: %v (Err %v), want the transport error", err, s.Err())
	}
	assertForgotten(t, n)
}

func TestNativeStreamBadFinal(t *testing.T) {
	cases := map[string]func(c net.Conn, stream uint64){
		"result with a body":     func(c net.Conn, s uint64) { send(c, wire.Result, 0, s, []byte(`"x"`)) },
		"reply":                  func(c net.Conn, s uint64) { send(c, wire.Reply, 0, s, []byte(`{}`)) },
		"unreadable error":       func(c net.Conn, s uint64) { send(c, wire.Error, 0, s, []byte(`{`)) },
		"chunk on a plain call":  nil,
		"chunk on no stream":     func(c net.Conn, s uint64) { send(c, wire.Chunk, 0, s+100, []byte(`1`)) },
		"credit from the worker": func(c net.Conn, s uint64) { send(c, wire.Credit, 0, s, wire.CreditBody(1)) },
	}
	for name, write := range cases {
		t.Run(name, func(t *testing.T) {
			leakCheck(t)
			ep := fakeWorker(t, func(c net.Conn) {
				acceptHello(t, c)
				h, _ := recv(t, c)
				if write == nil {
					send(c, wire.Chunk, 0, h.Stream, []byte(`1`))
				} else {
					write(c, h.Stream)
				}
				recv(t, c) // PROTOCOL_ERROR, then EOF
			})
			n := dialNative(t, ep)
			if write == nil {
				if _, err := n.Execute(context.Background(), &pb.ExecuteRequest{Tool: "echo"}); !errors.Is(err, wire.ErrBadFrame) {
					t.Fatalf("got %v, want a bad frame", err)
				}
				return
			}
			s, err := n.ExecuteStream(context.Background(), &pb.ExecuteRequest{Tool: "count"}, 1)
			if err != nil {
				t.Fatal(err)
			}
			waitClosed(t, s.Done(), "Done")
			if !errors.Is(s.Err(), wire.ErrBadFrame) {
				t.Fatalf("Err = %v, want a bad frame", s.Err())
			}
			waitClosed(t, n.done, "the connection")
			assertForgotten(t, n)
		})
	}
}

func TestExecuteStreamWindow(t *testing.T) {
	for _, w := range []int{0, -1, MaxStreamWindow + 1} {
		if _, err := (&nativeConn{}).ExecuteStream(context.Background(), &pb.ExecuteRequest{}, w); err == nil {
			t.Fatalf("window %d accepted", w)
		}
	}
}

// TestNativeSessions: a call's session travels in its EXECUTE meta;
// EndSession is REQUEST session_end, its REPLY decoded.
func TestNativeSessions(t *testing.T) {
	leakCheck(t)
	ep := fakeWorker(t, func(c net.Conn) {
		acceptHello(t, c)
		frames := frameReader(c)
		f, _ := next(frames, 5*time.Second)
		if m := parseExecute(t, f); m.Session != "sess-1" || m.Stream != 0 {
			t.Errorf("EXECUTE meta %+v, want session sess-1 and no stream", m)
		}
		send(c, wire.Result, 0, f.h.Stream, []byte(`"sess-1"`))
		f, _ = next(frames, 5*time.Second)
		var op map[string]any
		if f.h.Type != wire.Request || json.Unmarshal(f.body, &op) != nil || len(op) != 2 || op["op"] != "session_end" || op["session"] != "sess-1" {
			t.Errorf("session_end request: %s %s", f.h.Type, f.body)
		}
		send(c, wire.Reply, 0, f.h.Stream, []byte(`{"ended":true,"hook_error":"Traceback: boom"}`))
		f, _ = next(frames, 5*time.Second)
		send(c, wire.Reply, 0, f.h.Stream, []byte(`{"error":"no such thing"}`))
		for range frames {
		}
	})
	n := dialNative(t, ep)
	ctx := context.Background()
	if r, err := n.Execute(ctx, &pb.ExecuteRequest{Tool: "session_info", SessionId: "sess-1"}); err != nil || string(r.GetResultJson()) != `"sess-1"` {
		t.Fatalf("Execute: %v %v", r, err)
	}
	r, err := n.EndSession(ctx, "sess-1")
	if err != nil || !r.GetEnded() || r.GetHookError() != "Traceback: boom" {
		t.Fatalf("EndSession: %v %v", r, err)
	}
	if _, err := n.EndSession(ctx, "sess-2"); err == nil || !strings.Contains(err.Error(), "no such thing") {
		t.Fatalf("EndSession failing in the worker: %v", err)
	}
	assertForgotten(t, n)
}

// TestNativeStreamsConcurrent: many streams at once on one connection, each
// consumed by its own goroutine, get their own chunks.
func TestNativeStreamsConcurrent(t *testing.T) {
	leakCheck(t)
	const streams, chunks = 20, 30
	ep := fakeWorker(t, func(c net.Conn) {
		acceptHello(t, c)
		frames := frameReader(c)
		credit := map[uint64]int{}
		sent := map[uint64]int{}
		for done := 0; done < streams; {
			f, ok := next(frames, 5*time.Second)
			if !ok {
				t.Error("fake worker: stalled")
				return
			}
			switch f.h.Type {
			case wire.Execute:
				credit[f.h.Stream] = parseExecute(t, f).Stream
			case wire.Credit:
				k, _ := wire.ParseCredit(f.body)
				credit[f.h.Stream] += int(k)
			}
			for id, cr := range credit {
				for ; cr > 0 && sent[id] < chunks; cr-- {
					send(c, wire.Chunk, 0, id, fmt.Appendf(nil, "%d", id*1000+uint64(sent[id])))
					sent[id]++
				}
				credit[id] = cr
				if sent[id] == chunks {
					send(c, wire.Result, 0, id, nil)
					delete(credit, id)
					sent[id]++
					done++
				}
			}
		}
		for range frames {
		}
	})
	n := dialNative(t, ep)
	var wg sync.WaitGroup
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := n.ExecuteStream(context.Background(), &pb.ExecuteRequest{Tool: "count"}, 3)
			if err != nil {
				t.Error(err)
				return
			}
			id := s.(*nativeStream).id
			for i := 0; ; i++ {
				c, err := s.Next(context.Background())
				if err == io.EOF && i == chunks {
					return
				}
				if err != nil || string(c.Data) != fmt.Sprint(id*1000+uint64(i)) {
					t.Errorf("stream %d chunk %d: %q %v", id, i, c.Data, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	assertForgotten(t, n)
}
