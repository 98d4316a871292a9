package snakepit_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit-go/snakepit"
)

// EnvSoak makes the long variants of the reliability tests run (make soak).
const EnvSoak = "SNAKEPIT_SOAK"

// TestCrashStorm: 16 callers call a pool of 4 while a random worker is
// killed with SIGKILL every 50 ms for 5 s. Every call ends with a result or
// a typed error before its deadline (none missing, none hung), and the pool
// is whole and serving afterwards.
func TestCrashStorm(t *testing.T) {
	eachTransport(t, func(t *testing.T) {
		p := pool(t, "p", "echo_tools", 4)
		p.Restart = snakepit.RestartPolicy{MaxRestarts: 100_000, InitialBackoff: time.Millisecond, MaxBackoff: 50 * time.Millisecond}
		rt, _ := start(t, p)
		var issued, ok, crashed, transport atomic.Int64
		var other sync.Map
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					issued.Add(1)
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					_, err := rt.Call(ctx, "p", "echo", map[string]any{"value": "x"})
					cancel()
					switch {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, snakepit.ErrWorkerCrashed):
						crashed.Add(1)
					case errors.Is(err, snakepit.ErrTransport):
						transport.Add(1)
					default:
						other.Store(err.Error(), true)
					}
				}
			}()
		}
		kills := 0
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			ws := health(t, rt, "p").Workers
			if w := ws[rand.IntN(len(ws))]; w.Ready && syscall.Kill(w.Pid, syscall.SIGKILL) == nil {
				kills++
			}
		}
		close(stop)
		wg.Wait()
		other.Range(func(k, _ any) bool {
			t.Errorf("a call ended with an unexpected error: %v", k)
			return true
		})
		if ended := ok.Load() + crashed.Load() + transport.Load(); ended != issued.Load() {
			t.Fatalf("%d calls issued, %d ended: calls were lost", issued.Load(), ended)
		}
		waitFor(t, "the pool to be whole", 30*time.Second, func() bool { return health(t, rt, "p").Ready == 4 })
		for range 20 {
			if _, err := rt.Call(callCtx(t), "p", "echo", nil); err != nil {
				t.Fatalf("after the storm: %v", err)
			}
		}
		if h := health(t, rt, "p"); h.Failed {
			t.Fatalf("pool failed: %s", h.Reason)
		}
		t.Logf("%d kills; %d calls: %d ok, %d worker crashed, %d transport; none lost or hung",
			kills, issued.Load(), ok.Load(), crashed.Load(), transport.Load())
	})
}

// TestRestartsLeakNothing: after many worker restarts and Stop, no
// goroutine, file descriptor or zombie process is left (1,000 restarts
// under make soak; 40 in make test).
func TestRestartsLeakNothing(t *testing.T) {
	restarts := 40
	if os.Getenv(EnvSoak) != "" {
		restarts = 1000
	}
	if n, err := strconv.Atoi(os.Getenv("SNAKEPIT_TEST_RESTARTS")); err == nil {
		restarts = n
	}
	defer checkNoLeaks(t)()
	fds := openFDs(t)
	p := pool(t, "p", "echo_tools", 1)
	p.Restart = snakepit.RestartPolicy{MaxRestarts: 100_000, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
	log, _ := testLogger(t)
	rt, err := snakepit.Start(callCtx(t), snakepit.Config{Pools: []snakepit.PoolConfig{p}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	for i := range restarts {
		old := killWorker(t, rt, "p", 0)
		waitFor(t, "restart "+strconv.Itoa(i+1), 30*time.Second, func() bool {
			w := health(t, rt, "p").Workers[0]
			return w.Ready && w.Pid != old
		})
	}
	if _, err := rt.Call(callCtx(t), "p", "echo", nil); err != nil {
		t.Fatal(err)
	}
	if err := rt.Stop(callCtx(t)); err != nil {
		t.Fatal(err)
	}
	if z := zombieChildren(t); len(z) > 0 {
		t.Errorf("zombie children left: %v", z)
	}
	// Descriptors close with the goroutines that own them: allow them the
	// time goleak allows goroutines, then compare.
	deadline := time.Now().Add(10 * time.Second)
	for len(openFDs(t)) > len(fds) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if after := openFDs(t); len(after) > len(fds) {
		t.Errorf("%d descriptors open before, %d after: %v", len(fds), len(after), fdTargets(after))
	}
	t.Logf("%d restarts: %d descriptors before, %d after", restarts, len(fds), len(openFDs(t)))
}

// fdTargets says what each descriptor refers to.
func fdTargets(ents []os.DirEntry) []string {
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		out = append(out, e.Name()+"→"+target)
	}
	return out
}

func openFDs(t *testing.T) []os.DirEntry {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return ents
}

// zombieChildren lists this process's children that exited unreaped.
func zombieChildren(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	me := strconv.Itoa(os.Getpid())
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // state, ppid, ...
		if len(f) > 1 && f[0] == "Z" && f[1] == me {
			out = append(out, e.Name())
		}
	}
	return out
}
