package profiles

import (
	"strings"
	"testing"
)

func TestLookup(t *testing.T) {
	for name, want := range map[string]string{"": "process", "process": "process", "thread": "thread", "auto": "auto"} {
		p, err := Lookup(name)
		if err != nil || p.Name() != want {
			t.Fatalf("Lookup(%q) = %v, %v", name, p, err)
		}
	}
	if _, err := Lookup("fibers"); err == nil || !strings.Contains(err.Error(), "known: auto, process, thread") {
		t.Fatalf("unknown profile error = %v", err)
	}
}

func TestShapes(t *testing.T) {
	gil := Interpreter{Version: "3.11.2", GILEnabled: true}
	ft := Interpreter{Version: "3.13.5", FreeThreaded: true}
	ftGILOn := Interpreter{Version: "3.13.5", FreeThreaded: true, GILEnabled: true}
	cases := []struct {
		profile  Profile
		settings Settings
		want     string
		capacity int
	}{
		{Process{}, Settings{ThreadsPerWorker: 8, Interpreter: ft}, "process", 1},
		{Thread{}, Settings{}, "thread", DefaultThreadsPerWorker},
		{Thread{}, Settings{ThreadsPerWorker: 16}, "thread", 16},
		{Auto{}, Settings{ThreadsPerWorker: 8, Interpreter: gil}, "process", 1},
		{Auto{}, Settings{ThreadsPerWorker: 8, Interpreter: ft}, "thread", 8},
		{Auto{}, Settings{ThreadsPerWorker: 8, Interpreter: ftGILOn}, "process", 1},
	}
	for _, c := range cases {
		s := c.profile.Shape(c.settings)
		if s.Profile != c.want || s.Capacity != c.capacity || s.Why == "" {
			t.Errorf("%s with %+v: got %+v, want %s capacity %d", c.profile.Name(), c.settings, s, c.want, c.capacity)
		}
		if len(s.Env) != len(NativeThreadVars) || s.Env[0] != "OMP_NUM_THREADS=1" {
			t.Errorf("%s: env %v", c.profile.Name(), s.Env)
		}
	}
}

func TestChooseSaysWhy(t *testing.T) {
	_, why := Choose(Interpreter{Version: "3.13.5", FreeThreaded: true, GILEnabled: true})
	if !strings.Contains(why, "GIL is on") {
		t.Fatalf("why = %q", why)
	}
}
