package pyworker

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit/pyworker/pb"
	"github.com/snakepit-go/snakepit/pyworker/wire"
)

// fakeWorker serves one connection with script, over a real Unix socket. It
// checks the Go side's handling of what a worker may send; the Python
// worker's own handling is tested in pyworker/python/tests.
func fakeWorker(t *testing.T, script func(c net.Conn)) Endpoint {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "w.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		script(c)
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return Endpoint{Socket: sock, Token: "secret", MaxMessageBytes: 1 << 20}
}

func send(c net.Conn, t wire.Type, flags uint16, stream uint64, body []byte) {
	hdr := make([]byte, wire.HeaderSize)
	wire.NewHeader(t, flags, stream, len(body)).Put(hdr)
	_, _ = c.Write(append(hdr, body...))
}

func recv(t *testing.T, c net.Conn) (wire.Header, []byte) {
	h, body, err := wire.ReadFrame(c, make([]byte, wire.HeaderSize), 1<<22)
	if err != nil {
		t.Errorf("fake worker: read: %v", err)
	}
	return h, body
}

// acceptHello reads HELLO and answers HELLO_OK.
func acceptHello(t *testing.T, c net.Conn) {
	h, body := recv(t, c)
	var hello struct {
		Version int    `json:"version"`
		Token   string `json:"token"`
	}
	if h.Type != wire.Hello || json.Unmarshal(body, &hello) != nil || hello.Token != "secret" || hello.Version != wire.Version {
		t.Errorf("first frame: %v %s", h.Type, body)
	}
	send(c, wire.HelloOK, 0, 0, []byte(`{"version":2,"pid":1,"python":"3.11.2","capacity":1}`))
}

func dial(t *testing.T, ep Endpoint) (Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return Native{}.Dial(ctx, ep)
}

func TestNativeHelloRefused(t *testing.T) {
	ep := fakeWorker(t, func(c net.Conn) {
		recv(t, c)
		send(c, wire.ProtocolError, 0, 0, []byte(`{"message":"wrong token"}`))
	})
	if _, err := dial(t, ep); err == nil || !strings.Contains(err.Error(), "wrong token") {
		t.Fatalf("got %v, want the worker's refusal", err)
	}
}

func TestNativeVersionMismatch(t *testing.T) {
	ep := fakeWorker(t, func(c net.Conn) {
		recv(t, c)
		hdr := make([]byte, wire.HeaderSize)
		wire.Header{Version: 1, Type: wire.HelloOK}.Put(hdr)
		_, _ = c.Write(hdr)
	})
	_, err := dial(t, ep)
	var pe *ProtocolError
	if !errors.As(err, &pe) || pe.Got != 1 {
		t.Fatalf("got %v, want a *ProtocolError for version 1", err)
	}
}

func TestNativeMultiplexesOutOfOrder(t *testing.T) {
	ep := fakeWorker(t, func(c net.Conn) {
		acceptHello(t, c)
		h1, _ := recv(t, c)
		h2, _ := recv(t, c)
		send(c, wire.Result, 0, h2.Stream, []byte(`"second"`)) // answered in reverse order
		send(c, wire.Result, wire.FlagRaw, h1.Stream, []byte("first"))
	})
	conn, err := dial(t, ep)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	results := make(chan *pb.ExecuteReply, 2)
	call := func(tool string) {
		r, err := conn.Execute(context.Background(), &pb.ExecuteRequest{Tool: tool})
		if err != nil {
			t.Error(err)
		}
		results <- r
	}
	go call("a") // whichever call gets which stream, each must get its own reply
	go call("b")
	got := map[string]bool{}
	for i := 0; i < 2; i++ {
		r := <-results
		if raw := r.GetResultRaw(); raw != nil {
			got["raw:"+string(raw)] = true
		} else {
			got["json:"+string(r.GetResultJson())] = true
		}
	}
	if !got["raw:first"] || !got[`json:"second"`] {
		t.Fatalf("replies = %v", got)
	}
}

func TestNativeBadFramesFailPendingCalls(t *testing.T) {
	cases := []struct {
		name  string
		write func(c net.Conn, stream uint64)
		want  string
	}{
		{"garbage", func(c net.Conn, _ uint64) { _, _ = c.Write([]byte("\xde\xad\xbe\xef garbage garbage garbage")) }, "bad frame"},
		{"oversized", func(c net.Conn, s uint64) {
			hdr := make([]byte, wire.HeaderSize)
			wire.NewHeader(wire.Result, 0, s, 1<<30).Put(hdr)
			_, _ = c.Write(hdr)
		}, "exceeds the limit"},
		{"truncated", func(c net.Conn, s uint64) {
			hdr := make([]byte, wire.HeaderSize)
			wire.NewHeader(wire.Result, 0, s, 100).Put(hdr)
			_, _ = c.Write(append(hdr, "only a few bytes"...))
			c.Close()
		}, "truncated"},
		{"unknown type", func(c net.Conn, s uint64) { send(c, wire.Type(42), 0, s, nil) }, "unknown frame type 42"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			told := make(chan string, 1)
			ep := fakeWorker(t, func(c net.Conn) {
				acceptHello(t, c)
				h, _ := recv(t, c)
				tc.write(c, h.Stream)
				if tc.name != "truncated" { // the runtime says why before it closes
					if h, body, err := wire.ReadFrame(c, make([]byte, wire.HeaderSize), 1<<20); err == nil && h.Type == wire.ProtocolError {
						told <- string(body)
					}
				}
				close(told)
			})
			conn, err := dial(t, ep)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_, err = conn.Execute(context.Background(), &pb.ExecuteRequest{Tool: "x"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if msg, ok := <-told; tc.name != "truncated" && (!ok || !strings.Contains(msg, tc.want)) {
				t.Fatalf("worker was told %q", msg)
			}
			if _, err := conn.Execute(context.Background(), &pb.ExecuteRequest{Tool: "x"}); err == nil {
				t.Fatal("a call on a broken connection succeeded")
			}
		})
	}
}

func TestNativeCancelIsSent(t *testing.T) {
	cancelled := make(chan uint64, 1)
	ep := fakeWorker(t, func(c net.Conn) {
		acceptHello(t, c)
		h, _ := recv(t, c)
		ch, _ := recv(t, c)
		if ch.Type == wire.Cancel && ch.Stream == h.Stream {
			cancelled <- ch.Stream
		}
		close(cancelled)
	})
	conn, err := dial(t, ep)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := conn.Execute(ctx, &pb.ExecuteRequest{Tool: "slow"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	if _, ok := <-cancelled; !ok {
		t.Fatal("the worker got no CANCEL for the call's stream")
	}
}
