package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hashicorp/go-hclog"

	apb "github.com/snakepit-go/snakepit/actors/pb"
	"github.com/snakepit-go/snakepit/pyworker"
	wpb "github.com/snakepit-go/snakepit/pyworker/pb"
	"github.com/snakepit-go/snakepit/supervision"
	"github.com/snakepit-go/snakepit/telemetry"
)

// The fake world the unit tests run pools in: real actors, a fake launcher
// (WorkerSettings.Launch) whose workers are a fake process and a fake
// connection (pyworker.NewHandle). Every call a fake worker receives is
// handed to the test, which answers it when it wants: nothing here waits
// on time.

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeProc is a worker process. It exits on a signal or a Shutdown, unless
// held: then it only records them, until the test lets it die.
type fakeProc struct {
	pid     int
	done    chan struct{}
	once    sync.Once
	status  pyworker.ExitStatus
	hold    atomic.Bool
	signals chan syscall.Signal
}

// fakePidBase is above any Linux pid_max: no real process has such a pid.
const fakePidBase = 1 << 23

func (p *fakeProc) Pid() int                    { return p.pid }
func (p *fakeProc) Done() <-chan struct{}       { return p.done }
func (p *fakeProc) Status() pyworker.ExitStatus { <-p.done; return p.status }
func (p *fakeProc) CloseStdin()                 {}

func (p *fakeProc) SignalGroup(sig syscall.Signal) error {
	select {
	case p.signals <- sig:
	default:
	}
	if !p.hold.Load() {
		p.die(pyworker.ExitStatus{Code: -1, Signal: sig})
	}
	return nil
}

// die ends the process with st (the first end counts).
func (p *fakeProc) die(st pyworker.ExitStatus) {
	p.once.Do(func() {
		p.status = st
		close(p.done)
	})
}

func (p *fakeProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// fakeWorker is one incarnation of a worker: its process and connection.
type fakeWorker struct {
	id       string // the worker's id (Spec.ID)
	n        int    // which launch of that id (1: the first)
	world    *fakeWorld
	proc     *fakeProc
	running  atomic.Int32 // Execute calls under way
	most     atomic.Int32 // the most ever under way at once
	executes atomic.Int32 // Execute calls received
	// pythonInFlight, when >= 0, is what Stats reports instead of running
	// (a call Python still runs after its caller gave up).
	pythonInFlight atomic.Int32
	shutdown       chan struct{} // closed by Shutdown
	shutdownOnce   sync.Once
	ended          chan string   // the session ids whose end hook ran
	stats          chan struct{} // one per Stats call (a watchdog probe)
}

// fakeConn is a fakeWorker's connection.
type fakeConn struct{ fw *fakeWorker }

// fakeCall is one Execute a fake worker received; the test answers it.
type fakeCall struct {
	fw     *fakeWorker
	req    *wpb.ExecuteRequest
	answer chan fakeAnswer
}

type fakeAnswer struct {
	reply *wpb.ExecuteReply
	err   error
}

var errFakeConnDown = errors.New("fake connection: the process is gone")

func (c *fakeCall) ok() {
	c.answer <- fakeAnswer{reply: &wpb.ExecuteReply{RequestId: c.req.GetRequestId(),
		Outcome: &wpb.ExecuteReply_ResultJson{ResultJson: []byte("null")}}}
}

func (c *fakeCall) fail(err error) { c.answer <- fakeAnswer{err: err} }

func (c *fakeConn) Execute(ctx context.Context, req *wpb.ExecuteRequest) (*wpb.ExecuteReply, error) {
	fw := c.fw
	fw.executes.Add(1)
	n := fw.running.Add(1)
	defer fw.running.Add(-1)
	for m := fw.most.Load(); n > m && !fw.most.CompareAndSwap(m, n); m = fw.most.Load() {
	}
	call := &fakeCall{fw: fw, req: req, answer: make(chan fakeAnswer, 1)}
	fw.world.calls <- call
	select {
	case a := <-call.answer:
		return a.reply, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-fw.proc.done:
		return nil, errFakeConnDown
	}
}

func (c *fakeConn) ExecuteStream(context.Context, *wpb.ExecuteRequest, int) (pyworker.Stream, error) {
	return nil, errors.New("fake connection: no streams")
}

func (c *fakeConn) EndSession(_ context.Context, id string) (*wpb.EndSessionReply, error) {
	c.fw.ended <- id
	return &wpb.EndSessionReply{Ended: true}, nil
}

func (c *fakeConn) Describe(context.Context) (*wpb.DescribeReply, error) {
	return &wpb.DescribeReply{}, nil
}

func (c *fakeConn) Health(context.Context) (*wpb.HealthReply, error) {
	return &wpb.HealthReply{Ok: true}, nil
}

func (c *fakeConn) Stats(context.Context) (*wpb.StatsReply, error) {
	select {
	case c.fw.stats <- struct{}{}:
	default:
	}
	n := c.fw.pythonInFlight.Load()
	if n < 0 {
		n = c.fw.running.Load()
	}
	return &wpb.StatsReply{InFlight: n}, nil
}

func (c *fakeConn) Shutdown(context.Context, time.Duration) error {
	c.fw.shutdownOnce.Do(func() { close(c.fw.shutdown) })
	if !c.fw.proc.hold.Load() {
		c.fw.proc.die(pyworker.ExitStatus{})
	}
	return nil
}

func (c *fakeConn) Close() error { return nil }

// launchKey names the n-th launch of worker id.
type launchKey struct {
	id string
	n  int
}

// fakeWorld launches fake workers and hands their calls to the test.
type fakeWorld struct {
	calls    chan *fakeCall
	launches chan launchKey // every launch, when it starts

	mu      sync.Mutex
	workers map[string][]*fakeWorker
	gates   map[launchKey]chan struct{}
	fails   map[launchKey]error
	pids    int
}

func newFakeWorld(t *testing.T) *fakeWorld {
	w := &fakeWorld{calls: make(chan *fakeCall, 256), launches: make(chan launchKey, 256),
		workers: map[string][]*fakeWorker{}, gates: map[launchKey]chan struct{}{}, fails: map[launchKey]error{}}
	t.Cleanup(w.endAll)
	return w
}

// hold makes the n-th launch of id wait until release is called.
func (w *fakeWorld) hold(id string, n int) (release func()) {
	gate := make(chan struct{})
	w.mu.Lock()
	w.gates[launchKey{id, n}] = gate
	w.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(gate) }) }
}

// failLaunch makes the n-th launch of id fail with err.
func (w *fakeWorld) failLaunch(id string, n int, err error) {
	w.mu.Lock()
	w.fails[launchKey{id, n}] = err
	w.mu.Unlock()
}

func (w *fakeWorld) launch(ctx context.Context, spec pyworker.Spec) (*pyworker.Handle, error) {
	w.mu.Lock()
	key := launchKey{spec.ID, len(w.workers[spec.ID]) + 1}
	fw := &fakeWorker{id: spec.ID, n: key.n, world: w, shutdown: make(chan struct{}),
		ended: make(chan string, 16), stats: make(chan struct{}, 1)}
	fw.pythonInFlight.Store(-1)
	w.workers[spec.ID] = append(w.workers[spec.ID], fw) // counted even if it fails
	gate, err := w.gates[key], w.fails[key]
	w.pids++
	fw.proc = &fakeProc{pid: fakePidBase + w.pids, done: make(chan struct{}), signals: make(chan syscall.Signal, 8)}
	w.mu.Unlock()
	w.launches <- key
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	return pyworker.NewHandle(fw.proc, &fakeConn{fw: fw}), nil
}

// worker is the n-th incarnation of worker id (it must have been launched).
func (w *fakeWorld) worker(t *testing.T, id string, n int) *fakeWorker {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.workers[id]) < n {
		t.Fatalf("worker %s was launched %d times, not %d", id, len(w.workers[id]), n)
	}
	return w.workers[id][n-1]
}

// launchCount is how many launches there were.
func (w *fakeWorld) launchCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, fws := range w.workers {
		n += len(fws)
	}
	return n
}

// nextCall is the next call any fake worker received.
func (w *fakeWorld) nextCall() *fakeCall { return <-w.calls }

// nextLaunch is the next launch to start.
func (w *fakeWorld) nextLaunch() launchKey { return <-w.launches }

// endAll lets every held process die and releases every gate, so that a
// failed test leaves nothing waiting.
func (w *fakeWorld) endAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, g := range w.gates {
		select {
		case <-g:
		default:
			close(g)
		}
		delete(w.gates, k)
	}
	for _, fws := range w.workers {
		for _, fw := range fws {
			fw.proc.die(pyworker.ExitStatus{Code: -1, Signal: syscall.SIGKILL})
		}
	}
}

// testPool is a pool actor running on a fake world.
type testPool struct {
	t      *testing.T
	world  *fakeWorld
	clock  *fakeClock
	system *actor.ActorSystem
	pid    *actor.PID
	events chan telemetry.Event
	seq    atomic.Int64
}

// startPool starts a pool ("p", 2 workers of capacity 1, a queue of 4 by
// default; tweak changes the settings) and waits until it is ready. The
// launches of its first workers are consumed: nextLaunch tells of later
// ones.
func startPool(t *testing.T, tweak func(*PoolSettings)) *testPool {
	t.Helper()
	tp, size := newTestPool(t, tweak)
	if r := tp.ask(&AwaitReady{}).(*ReadyReply); r.Err != nil {
		t.Fatalf("pool did not start: %v", r.Err)
	}
	for range size {
		tp.world.nextLaunch()
	}
	return tp
}

func newTestPool(t *testing.T, tweak func(*PoolSettings)) (*testPool, int) {
	tp := &testPool{t: t, world: newFakeWorld(t), clock: newFakeClock(), events: make(chan telemetry.Event, 1024)}
	bus := telemetry.NewBus()
	sub := bus.Subscribe(func(e telemetry.Event) { tp.events <- e })
	s := PoolSettings{Name: "p", Profile: "process", Size: 2, QueueSize: 4, Clock: tp.clock, Logger: hclog.NewNullLogger(),
		Events: bus, Restart: supervision.Policy{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond},
		Worker: WorkerSettings{Spec: pyworker.Spec{Capacity: 1}, Launch: tp.world.launch, StartTimeout: time.Minute,
			Watchdog: supervision.WatchdogPolicy{}.WithDefaults()}}
	if tweak != nil {
		tweak(&s)
	}
	tp.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return telemetry.SlogToHclog(hclog.NewNullLogger())
	}))
	tp.pid = tp.system.Root.Spawn(NewPoolProps(s))
	t.Cleanup(func() {
		tp.world.endAll()
		tp.system.Root.PoisonFuture(tp.pid).Wait()
		tp.system.Shutdown()
		sub.Close()
	})
	return tp, s.Size
}

// ask sends msg to the pool and waits for its answer.
func (tp *testPool) ask(msg any) any { return tp.askAt(tp.pid, msg) }

func (tp *testPool) askAt(pid *actor.PID, msg any) any {
	box := NewReplyBox(tp.system)
	defer box.Release()
	tp.system.Root.RequestWithCustomSender(pid, msg, box.PID())
	return <-box.C()
}

// request sends msg to the pool; the answer comes in the box.
func (tp *testPool) request(msg any) *ReplyBox {
	box := NewReplyBox(tp.system)
	tp.t.Cleanup(box.Release)
	tp.system.Root.RequestWithCustomSender(tp.pid, msg, box.PID())
	return box
}

func (tp *testPool) status() *PoolStatus { return tp.ask(&StatusRequest{}).(*PoolStatus) }

// pidOf is the actor of worker id.
func (tp *testPool) pidOf(id string) *actor.PID {
	st := tp.status()
	for i, w := range st.Workers {
		if w.ID == id {
			return st.WorkerPIDs[i]
		}
	}
	tp.t.Fatalf("no worker %s in the pool", id)
	return nil
}

// pendingCall is a call sent to the pool; its reply comes in its box.
type pendingCall struct {
	t   *testing.T
	id  string
	box *ReplyBox
}

// newRequest is a call of tool "t" with a fresh id.
func (tp *testPool) newRequest() *apb.CallRequest {
	id := fmt.Sprintf("r%d", tp.seq.Add(1))
	return &apb.CallRequest{Execute: &wpb.ExecuteRequest{RequestId: id, Tool: "t"}}
}

// call sends a call to the pool; edit may change its request first.
func (tp *testPool) call(edit func(*apb.CallRequest)) *pendingCall {
	req := tp.newRequest()
	if edit != nil {
		edit(req)
	}
	return &pendingCall{t: tp.t, id: req.GetExecute().GetRequestId(), box: tp.request(req)}
}

// reply waits for the call's reply.
func (c *pendingCall) reply() *apb.CallReply {
	c.t.Helper()
	r, ok := (<-c.box.C()).(*apb.CallReply)
	if !ok {
		c.t.Fatalf("call %s: the reply is not a CallReply", c.id)
	}
	return r
}

// wantOK waits for the call's reply and fails the test unless it succeeded.
func (c *pendingCall) wantOK() *apb.CallReply {
	c.t.Helper()
	r := c.reply()
	if r.GetFailure() != nil {
		c.t.Fatalf("call %s failed: %v", c.id, r.GetFailure())
	}
	return r
}

// wantFailure waits for the call's reply and checks its failure.
func (c *pendingCall) wantFailure(code apb.Failure_Code, text string) {
	c.t.Helper()
	r := c.reply()
	if r.GetFailure().GetCode() != code || !strings.Contains(r.GetFailure().GetMessage(), text) {
		c.t.Fatalf("call %s: got %v, want %s containing %q", c.id, r.GetFailure(), code, text)
	}
}

// waitEvent returns the first event from now on that match accepts.
func waitEvent[E telemetry.Event](tp *testPool, match func(E) bool) E {
	for e := range tp.events {
		if ev, ok := e.(E); ok && (match == nil || match(ev)) {
			return ev
		}
	}
	panic("unreachable")
}

// loads is each worker's load, by id.
func loads(st *PoolStatus) map[string]int {
	out := map[string]int{}
	for _, w := range st.Workers {
		out[w.ID] = w.Load
	}
	return out
}
