// Package profiles decides how a pool's Python workers are made: the mode
// the worker runs in, how many calls one worker takes at once (its capacity)
// and the environment it gets. It never starts processes itself.
//
// Two profiles exist, plus a chooser:
//   - process: many single-threaded Python processes, capacity 1 each;
//   - thread: fewer processes, each running sync tools on a pool of N threads,
//     capacity N each — right on free-threaded CPython (3.13t with the GIL
//     off) and for I/O-bound or GIL-releasing code (numpy, hashlib, I/O);
//   - auto: thread when the interpreter is a free-threaded build whose GIL is
//     actually off at run time, process otherwise.
package profiles

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Names of the profiles.
const (
	ProcessName = "process"
	ThreadName  = "thread"
	AutoName    = "auto"
	// Default is the profile used when a pool names none.
	Default = ProcessName
	// DefaultThreadsPerWorker is the capacity of a thread-profile worker
	// when PoolConfig.ThreadsPerWorker is 0.
	DefaultThreadsPerWorker = 4
)

// NativeThreadVars are the variables that bound the threads native
// libraries (OpenMP, OpenBLAS, MKL, numexpr, Accelerate) start per process.
// Both profiles set each to DefaultNativeThreads unless the pool's Env sets
// it: parallelism comes from the workers (process) or from Python threads
// (thread), and a library that also starts a thread per core on top of that
// oversubscribes the machine.
var NativeThreadVars = []string{"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
	"NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"}

// DefaultNativeThreads is the value each of NativeThreadVars gets.
const DefaultNativeThreads = 1

// Interpreter is what a profile may know of the Python that runs workers.
type Interpreter struct {
	Version      string
	FreeThreaded bool // built with Py_GIL_DISABLED
	GILEnabled   bool // the GIL is on at run time
	// GILEnabledBy names the module whose import switches the GIL on, when
	// a free-threaded interpreter's GIL is on only because of it.
	GILEnabledBy string
}

// Settings are the pool settings a profile reads.
type Settings struct {
	ThreadsPerWorker int // 0: DefaultThreadsPerWorker
	Interpreter      Interpreter
}

// Shape is what a profile decides for every worker of one pool.
type Shape struct {
	// Profile is the concrete profile ("process" or "thread"; never "auto").
	Profile string
	// Capacity is how many calls one worker runs at the same time.
	Capacity int
	// Env is added to the worker's environment (KEY=VALUE), before the
	// pool's own Env, which wins.
	Env []string
	// Why explains the choice, for logs and the inspector.
	Why string
}

// Profile makes worker shapes.
type Profile interface {
	Name() string
	Shape(Settings) Shape
}

// Process is the process profile: one call at a time per worker process.
type Process struct{}

// Name returns "process".
func (Process) Name() string { return ProcessName }

// Shape returns capacity 1.
func (Process) Shape(Settings) Shape {
	return Shape{Profile: ProcessName, Capacity: 1, Env: nativeThreadEnv(), Why: "process profile: one call at a time per worker"}
}

// Thread is the thread profile: each worker runs up to ThreadsPerWorker sync
// tools at once on its own thread pool.
type Thread struct{}

// Name returns "thread".
func (Thread) Name() string { return ThreadName }

// Shape returns capacity ThreadsPerWorker.
func (Thread) Shape(s Settings) Shape {
	n := s.ThreadsPerWorker
	if n == 0 {
		n = DefaultThreadsPerWorker
	}
	return Shape{Profile: ThreadName, Capacity: n, Env: nativeThreadEnv(),
		Why: fmt.Sprintf("thread profile: %d threads per worker", n)}
}

// Auto picks thread on a free-threaded interpreter whose GIL is off, and
// process otherwise.
type Auto struct{}

// Name returns "auto".
func (Auto) Name() string { return AutoName }

// Shape delegates to the profile Choose picks.
func (Auto) Shape(s Settings) Shape {
	p, why := Choose(s.Interpreter)
	shape := p.Shape(s)
	shape.Why = "auto: " + why + "; " + shape.Why
	return shape
}

// Choose is auto's decision, with the reason.
func Choose(in Interpreter) (Profile, string) {
	switch {
	case in.FreeThreaded && !in.GILEnabled:
		return Thread{}, fmt.Sprintf("Python %s is free-threaded and its GIL is off", in.Version)
	case in.FreeThreaded && in.GILEnabledBy != "":
		return Process{}, fmt.Sprintf("Python %s is free-threaded, but importing the adapter switches its GIL on (module %s does not declare free-threading support)", in.Version, in.GILEnabledBy)
	case in.FreeThreaded:
		return Process{}, fmt.Sprintf("Python %s is a free-threaded build but its GIL is on (PYTHON_GIL=1 or -X gil=1?)", in.Version)
	default:
		return Process{}, fmt.Sprintf("Python %s has a GIL", in.Version)
	}
}

func nativeThreadEnv() []string {
	env := make([]string, len(NativeThreadVars))
	for i, k := range NativeThreadVars {
		env[i] = k + "=" + strconv.Itoa(DefaultNativeThreads)
	}
	return env
}

var registry = map[string]Profile{ProcessName: Process{}, ThreadName: Thread{}, AutoName: Auto{}}

// Lookup returns the named profile ("" means Default).
func Lookup(name string) (Profile, error) {
	if name == "" {
		name = Default
	}
	if p, ok := registry[name]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("unknown profile %q (known: %s)", name, strings.Join(Names(), ", "))
}

// Names lists the known profiles, sorted.
func Names() []string {
	out := make([]string, 0, len(registry))
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
