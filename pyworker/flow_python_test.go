package pyworker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/pyworker/pb"
)

// These tests run streams, callbacks and sessions against a real Python
// worker (the echo_tools test adapter), on both transports.

func forTransports(t *testing.T, test func(t *testing.T, tr Transport)) {
	for _, tr := range []Transport{Native{}, GRPC{}} {
		t.Run(tr.Name(), func(t *testing.T) {
			leakCheck(t)
			test(t, tr)
		})
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// collect reads a stream to its end: the chunks, and what ended it.
func collect(t *testing.T, s Stream) ([]string, error) {
	t.Helper()
	var got []string
	for {
		c, err := s.Next(testCtx(t))
		if err != nil {
			return got, err
		}
		got = append(got, string(c.Data))
	}
}

func TestPythonStreams(t *testing.T) {
	forTransports(t, func(t *testing.T, tr Transport) {
		h, _ := launchWorker(t, tr, func(s *Spec) { s.Capacity = 2 })
		ctx := testCtx(t)

		s, err := h.Conn.ExecuteStream(ctx, &pb.ExecuteRequest{RequestId: "st-1", Tool: "count", ArgsJson: []byte(`{"n":50,"start":10}`)}, 4)
		if err != nil {
			t.Fatal(err)
		}
		got, err := collect(t, s)
		if err != io.EOF || len(got) != 50 || got[0] != "10" || got[49] != "59" {
			t.Fatalf("count: %d chunks %v, ended by %v", len(got), got, err)
		}
		for i, c := range got {
			if c != fmt.Sprint(10+i) {
				t.Fatalf("chunk %d = %s", i, c)
			}
		}
		waitClosed(t, s.Done(), "Done")
		if s.Err() != nil {
			t.Fatal(s.Err())
		}

		// The worker never has more than the window outstanding.
		for _, window := range []int{1, 3} {
			s, err = h.Conn.ExecuteStream(ctx, &pb.ExecuteRequest{RequestId: "st-2", Tool: "count_window", ArgsJson: []byte(`{"n":40}`)}, window)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; ; i++ {
				c, err := s.Next(ctx)
				if err == io.EOF && i == 40 {
					break
				}
				var item struct {
					I        int `json:"i"`
					InFlight int `json:"in_flight"`
				}
				if err != nil || json.Unmarshal(c.Data, &item) != nil || item.I != i || item.InFlight >= window {
					t.Fatalf("window %d, chunk %d: %s %v", window, i, c.Data, err)
				}
				time.Sleep(time.Millisecond) // a slow consumer
			}
		}

		// A generator that raises: its chunks stay valid, then the error.
		s, err = h.Conn.ExecuteStream(ctx, &pb.ExecuteRequest{RequestId: "st-3", Tool: "fail_after", ArgsJson: []byte(`{"n":3}`)}, 2)
		if err != nil {
			t.Fatal(err)
		}
		got, err = collect(t, s)
		var re *RemoteError
		if !errors.As(err, &re) || re.Info.GetKind() != pb.ErrorInfo_KIND_TOOL_EXCEPTION || !strings.Contains(re.Info.GetMessage(), "boom after 3") ||
			strings.Join(got, ",") != "0,1,2" {
			t.Fatalf("fail_after: %v, ended by %v", got, err)
		}
	})
}

// TestPythonStreamCancel: Cancel closes the generator in the worker (its
// finally runs) and is acknowledged CANCELLED; so is the stream's context
// ending. The worker serves calls afterwards.
func TestPythonStreamCancel(t *testing.T) {
	forTransports(t, func(t *testing.T, tr Transport) {
		h, _ := launchWorker(t, tr, func(s *Spec) { s.Capacity = 2 })
		dir := t.TempDir()
		guarded := func(ctx context.Context, marker string) Stream {
			args, _ := json.Marshal(map[string]any{"n": 100000, "marker": filepath.Join(dir, marker), "delay": 0.002})
			s, err := h.Conn.ExecuteStream(ctx, &pb.ExecuteRequest{RequestId: marker, Tool: "guarded", ArgsJson: args}, 2)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		checkAck := func(s Stream, marker string) {
			t.Helper()
			got, err := collect(t, s)
			var re *RemoteError
			if !errors.As(err, &re) || re.Info.GetKind() != pb.ErrorInfo_KIND_CANCELLED {
				t.Fatalf("%s: ended by %v after %d chunks, want the CANCELLED ack", marker, err, len(got))
			}
			waitClosed(t, s.Done(), "Done")
			line, _ := os.ReadFile(filepath.Join(dir, marker))
			if !strings.HasPrefix(string(line), "finally thread=") || strings.Contains(string(line), "MainThread") {
				t.Fatalf("%s: the generator's finally wrote %q", marker, line)
			}
		}

		s := guarded(testCtx(t), "cancel")
		for i := range 3 {
			if c, err := s.Next(testCtx(t)); err != nil || string(c.Data) != fmt.Sprint(i) {
				t.Fatalf("chunk %d: %s %v", i, c.Data, err)
			}
		}
		s.Cancel()
		s.Cancel()
		checkAck(s, "cancel")

		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		s = guarded(ctx, "deadline")
		checkAck(s, "deadline")

		if r, err := h.Conn.Execute(testCtx(t), &pb.ExecuteRequest{Tool: "echo", ArgsJson: []byte(`{"value":"after"}`)}); err != nil || string(r.GetResultJson()) != `"after"` {
			t.Fatalf("echo after the cancels: %v %v", r, err)
		}
	})
}

func TestPythonCallbacks(t *testing.T) {
	forTransports(t, func(t *testing.T, tr Transport) {
		deadline := time.Now().Add(time.Minute).Truncate(time.Millisecond)
		handler := func(ctx context.Context, parent string, req *pb.CallbackRequest) *pb.CallbackReply {
			if dl, ok := ctx.Deadline(); !ok || !dl.Equal(deadline) || parent != req.GetParentRequestId() || !strings.HasPrefix(parent, "cb-") {
				return callbackFailure("HANDLER_ERROR", fmt.Sprintf("deadline %v %v, parent %q", dl, ok, parent))
			}
			switch req.GetName() {
			case "add":
				var a struct{ A, B int }
				if err := json.Unmarshal(req.GetArgsJson(), &a); err != nil {
					return callbackFailure("BAD_ARGUMENTS", err.Error())
				}
				return jsonReply(fmt.Sprint(a.A + a.B))
			case "bytes":
				return &pb.CallbackReply{Outcome: &pb.CallbackReply_ResultRaw{ResultRaw: req.GetBinaryArgs()["data"]}}
			case "square":
				var a struct{ I int }
				_ = json.Unmarshal(req.GetArgsJson(), &a)
				time.Sleep(time.Duration(a.I%5) * time.Millisecond)
				return jsonReply(fmt.Sprint(a.I * a.I))
			}
			return callbackFailure("UNKNOWN_CALLBACK", "not one of: add, bytes, square")
		}
		h, _ := launchWorker(t, tr, func(s *Spec) {
			s.Capacity, s.MaxMessageBytes, s.Callbacks = 2, 24<<20, handler
		})
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		call := func(id, tool string, args string, bin map[string][]byte) *pb.ExecuteReply {
			t.Helper()
			r, err := h.Conn.Execute(ctx, &pb.ExecuteRequest{RequestId: id, Tool: tool, ArgsJson: []byte(args), BinaryArgs: bin})
			if err != nil {
				t.Fatalf("%s: %v", tool, err)
			}
			return r
		}

		if r := call("cb-1", "callback", `{"name":"add","args":{"a":2,"b":3}}`, nil); string(r.GetResultJson()) != "5" {
			t.Fatalf("add: %v", r)
		}
		data := make([]byte, 10<<20)
		_, _ = rand.Read(data)
		if r := call("cb-2", "callback_bytes", `{"name":"bytes"}`, map[string][]byte{"data": data}); !bytes.Equal(r.GetResultRaw(), data) {
			t.Fatalf("bytes: %d bytes back, error %v", len(r.GetResultRaw()), r.GetError())
		}
		var squares []int
		if r := call("cb-3", "callback_many", `{"name":"square","n":20}`, nil); json.Unmarshal(r.GetResultJson(), &squares) != nil || len(squares) != 20 {
			t.Fatalf("many: %v", r)
		}
		for i, v := range squares {
			if v != i*i {
				t.Fatalf("many: %v", squares)
			}
		}
		if r := call("cb-4", "callback", `{"name":"nope"}`, nil); r.GetError().GetKind() != pb.ErrorInfo_KIND_TOOL_EXCEPTION ||
			!strings.Contains(r.GetError().GetMessage(), "UNKNOWN_CALLBACK") {
			t.Fatalf("an unknown name: %v", r)
		}
	})
}

// TestPythonCallbackWithoutHandler: a worker whose runtime registered no
// callbacks answers every callback UNKNOWN_CALLBACK.
func TestPythonCallbackWithoutHandler(t *testing.T) {
	forTransports(t, func(t *testing.T, tr Transport) {
		h, _ := launchWorker(t, tr)
		r, err := h.Conn.Execute(testCtx(t), &pb.ExecuteRequest{RequestId: "cb", Tool: "callback", ArgsJson: []byte(`{"name":"add"}`)})
		if err != nil || !strings.Contains(r.GetError().GetMessage(), "UNKNOWN_CALLBACK") {
			t.Fatalf("got %v %v", r, err)
		}
	})
}

func TestPythonSessions(t *testing.T) {
	forTransports(t, func(t *testing.T, tr Transport) {
		h, _ := launchWorker(t, tr)
		ctx := testCtx(t)
		info := func(session string) map[string]any {
			t.Helper()
			r, err := h.Conn.Execute(ctx, &pb.ExecuteRequest{Tool: "session_info", SessionId: session})
			var out map[string]any
			if err != nil || json.Unmarshal(r.GetResultJson(), &out) != nil {
				t.Fatalf("session_info: %v %v", r, err)
			}
			return out
		}
		for want := 1; want <= 2; want++ {
			if got := info("sess-A"); got["id"] != "sess-A" || got["calls"] != float64(want) {
				t.Fatalf("call %d of the session: %v", want, got)
			}
		}
		if got := info(""); got != nil {
			t.Fatalf("outside a session: %v", got)
		}
		r, err := h.Conn.EndSession(ctx, "sess-A")
		if err != nil || !r.GetEnded() || r.GetHookError() != "" {
			t.Fatalf("EndSession: %v %v", r, err)
		}
		ended, err := h.Conn.Execute(ctx, &pb.ExecuteRequest{Tool: "ended_sessions"})
		if err != nil || string(ended.GetResultJson()) != `["sess-A"]` {
			t.Fatalf("ended_sessions: %v %v", ended, err)
		}
		if r, err := h.Conn.EndSession(ctx, "sess-A"); err != nil || r.GetEnded() {
			t.Fatalf("ending it again: %v %v", r, err)
		}
		if got := info("sess-A"); got["calls"] != float64(1) {
			t.Fatalf("a session started again: %v", got)
		}
	})
}
