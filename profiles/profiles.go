// Package profiles decides how a pool's Python workers are made: the server
// mode the worker runs in, how many calls one worker takes at once (its
// capacity) and the environment it gets. It never starts processes itself.
package profiles

import (
	"fmt"
	"sort"
	"strings"
)

// Shape is what a profile decides for every worker of one pool.
type Shape struct {
	// Capacity is how many calls one worker runs at the same time.
	Capacity int
	// Env is added to the worker's environment (KEY=VALUE).
	Env []string
}

// Settings are the pool settings a profile may read.
type Settings struct {
	ThreadsPerWorker int
}

// Profile makes worker shapes.
type Profile interface {
	Name() string
	Shape(Settings) Shape
}

// Process is the process profile: many single-threaded Python processes, one
// call at a time each. It is right for CPU-bound pure-Python code under the GIL.
type Process struct{}

// Name returns "process".
func (Process) Name() string { return "process" }

// Shape returns capacity 1.
func (Process) Shape(Settings) Shape { return Shape{Capacity: 1} }

var registry = map[string]Profile{"process": Process{}}

// Default is the profile used when a pool names none.
const Default = "process"

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
