// Package floor is the call benchmark's floor: the cheapest round trip of a
// payload through a Python process. floor_server.py, stdlib only, reads
// frames in the native wire format's framing and answers each with the same
// body, from one thread with no parsing beyond the length. This package
// starts it and is its client.
//
// The client multiplexes like the runtime's native connection
// (pyworker.Native): one connection per server, every call on a stream of its
// own, frames written under a lock, one goroutine reading the answers and
// handing each to the call waiting for its stream. With 16 callers, 16 frames
// can be in flight at once; the server answers them in order.
//
// A server listens either on a Unix socket (Socket) or reads its frames from
// stdin and writes the answers to stdout (Pipe).
package floor

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snakepit-go/snakepit/pyworker/wire"
)

//go:embed floor_server.py
var serverSource string

// Mode is how the client reaches the server.
type Mode string

// Modes.
const (
	Socket Mode = "socket" // a Unix socket, as the worker's native transport
	Pipe   Mode = "pipe"   // the server's stdin and stdout
)

// MaxBody bounds one frame's body in either direction.
const MaxBody = 64<<20 + wire.MetaAllowance

// smallBody: a body up to this size is copied behind its header and sent in
// one write; a bigger one goes out as a vectored write (header, body).
const smallBody = 64 << 10

// Server is one running floor server and the connection to it.
type Server struct {
	Mode Mode
	cmd  *exec.Cmd
	dir  string
	conn *conn
}

// Start starts a floor server under python and connects to it. pipeSize,
// when not 0, sets the buffer size of a Pipe server's stdin and stdout pipes
// (Linux F_SETPIPE_SZ; the default is 64 KiB).
func Start(ctx context.Context, python string, mode Mode, pipeSize int) (*Server, error) {
	s := &Server{Mode: mode}
	args := []string{"-c", serverSource, string(mode)}
	if mode == Pipe && pipeSize != 0 {
		args = append(args, strconv.Itoa(pipeSize))
	}
	var sock string
	if mode == Socket {
		var err error
		if s.dir, err = os.MkdirTemp("", "snakepit-floor-"); err != nil {
			return nil, err
		}
		sock = filepath.Join(s.dir, "floor.sock")
		args = append(args, sock)
	} else if mode != Pipe {
		return nil, fmt.Errorf("floor: unknown mode %q", mode)
	}
	s.cmd = exec.Command(python, args...)
	s.cmd.Stderr = os.Stderr
	stdin, err := s.cmd.StdinPipe()
	if err != nil {
		s.cleanup()
		return nil, err
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		s.cleanup()
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		s.cleanup()
		return nil, fmt.Errorf("floor: start %s: %w", python, err)
	}
	if mode == Pipe {
		s.conn = newConn(stdout, stdin, func() { _ = stdin.Close() })
		return s, nil
	}
	_ = stdin.Close()
	if err := waitReady(ctx, stdout); err != nil {
		s.Close()
		return nil, fmt.Errorf("floor: %s server: %w", mode, err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("floor: %w", err)
	}
	s.conn = newConn(c, c, func() { _ = c.Close() })
	return s, nil
}

// waitReady reads the server's "ready" line.
func waitReady(ctx context.Context, stdout io.Reader) error {
	line := make(chan error, 1)
	go func() {
		s, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && strings.TrimSpace(s) != "ready" {
			err = fmt.Errorf("unexpected output %q", s)
		}
		line <- err
	}()
	select {
	case err := <-line:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Pid is the server's OS process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Echo sends body as one frame and returns the answer's body.
func (s *Server) Echo(ctx context.Context, body []byte) ([]byte, error) {
	return s.conn.roundTrip(ctx, body)
}

// Close ends the connection, which ends the server, and waits for it.
func (s *Server) Close() {
	if s.conn != nil {
		s.conn.fail(errors.New("closed"))
	}
	if s.cmd.Process != nil {
		exited := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(2 * time.Second):
			_ = s.cmd.Process.Kill()
			<-exited
		}
	}
	s.cleanup()
}

func (s *Server) cleanup() {
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// conn multiplexes calls over one byte stream, as pyworker's native
// connection does.
type conn struct {
	r     io.Reader
	w     io.Writer
	close func()
	next  atomic.Uint64
	wmu   sync.Mutex // one frame written at a time

	mu      sync.Mutex
	pending map[uint64]chan []byte
	err     error
	done    chan struct{}
}

func newConn(r io.Reader, w io.Writer, close func()) *conn {
	c := &conn{r: r, w: w, close: close, pending: map[uint64]chan []byte{}, done: make(chan struct{})}
	go c.readLoop()
	return c
}

func (c *conn) write(stream uint64, body []byte) error {
	var hdr [wire.HeaderSize]byte
	wire.NewHeader(wire.Execute, 0, stream, len(body)).Put(hdr[:])
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(body) <= smallBody {
		_, err := c.w.Write(append(hdr[:], body...))
		return err
	}
	bufs := net.Buffers{hdr[:], body}
	_, err := bufs.WriteTo(c.w)
	return err
}

func (c *conn) readLoop() {
	var hdr [wire.HeaderSize]byte
	for {
		h, body, err := wire.ReadFrame(c.r, hdr[:], MaxBody)
		if err != nil {
			c.fail(err)
			return
		}
		c.mu.Lock()
		ch, ok := c.pending[h.Stream]
		delete(c.pending, h.Stream)
		c.mu.Unlock()
		if ok {
			ch <- body // buffered: never blocks
		}
	}
}

func (c *conn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	close(c.done)
	c.close()
}

func (c *conn) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *conn) roundTrip(ctx context.Context, body []byte) ([]byte, error) {
	id := c.next.Add(1)
	ch := make(chan []byte, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.pending[id] = ch
	c.mu.Unlock()
	if err := c.write(id, body); err != nil {
		c.fail(fmt.Errorf("write: %w", err))
		return nil, c.failure()
	}
	select {
	case b := <-ch:
		return b, nil
	case <-c.done:
		return nil, c.failure()
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}
