package pyworker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// EnvPython names the environment variable consulted when Config.Python is
// empty.
const EnvPython = "SNAKEPIT_PYTHON"

// DefaultCandidates are tried, in order, when neither Config.Python nor
// $SNAKEPIT_PYTHON names an interpreter.
var DefaultCandidates = []string{"python3", "/usr/bin/python3", "python"}

// GRPCModules are the modules a worker using the gRPC transport must import.
var GRPCModules = []string{"grpc", "google.protobuf"}

// ErrNoPython is matched (errors.Is) by every *NoPythonError.
var ErrNoPython = errors.New("no usable Python interpreter")

// Interpreter is a Python that was found able to run a worker.
type Interpreter struct {
	Path    string // absolute path of the executable as resolved
	Version string // e.g. "3.11.2"
	// FreeThreaded: built with Py_GIL_DISABLED (e.g. python3.13t).
	FreeThreaded bool
	// GILEnabled: sys._is_gil_enabled() at start-up (true where it does not
	// exist). A free-threaded build may still run with the GIL on.
	GILEnabled bool
}

// Attempt records why one candidate interpreter was rejected.
type Attempt struct {
	Candidate string // as configured or listed, e.g. "python3"
	Problem   string
}

// NoPythonError lists every interpreter that was tried and why it failed.
type NoPythonError struct {
	Source  string // "Config.Python", "$SNAKEPIT_PYTHON" or "candidates"
	Modules []string
	Tried   []Attempt
}

func (e *NoPythonError) Error() string {
	var b strings.Builder
	if len(e.Modules) == 0 {
		fmt.Fprintf(&b, "no usable Python 3.11+ interpreter (from %s); tried:", e.Source)
	} else {
		fmt.Fprintf(&b, "no usable Python 3.11+ interpreter (from %s) can import %s; tried:", e.Source, strings.Join(e.Modules, ", "))
	}
	for _, a := range e.Tried {
		fmt.Fprintf(&b, "\n  - %s: %s", a.Candidate, a.Problem)
	}
	if len(e.Modules) == 0 {
		b.WriteString("\nfix: install Python 3.11 or newer, or set Config.Python or $SNAKEPIT_PYTHON to one")
	} else {
		b.WriteString("\nfix: install the worker's packages for one of them (Debian: `apt-get install python3-grpcio python3-protobuf`, or `make setup`; " +
			"elsewhere: `python3 -m pip install grpcio protobuf`), use the default native transport (PoolConfig.Transport), " +
			"or set Config.Python or $SNAKEPIT_PYTHON to an interpreter that has them")
	}
	return b.String()
}

func (e *NoPythonError) Is(target error) bool { return target == ErrNoPython }

// FindInterpreter returns the first usable interpreter: explicit if it is not
// empty, else $SNAKEPIT_PYTHON, else the first of DefaultCandidates that can
// import modules. An explicit choice that fails is an error: it is never
// silently replaced by another interpreter.
func FindInterpreter(ctx context.Context, explicit string, modules []string) (Interpreter, error) {
	source, candidates := "candidates", DefaultCandidates
	if explicit != "" {
		source, candidates = "Config.Python", []string{explicit}
	} else if env := os.Getenv(EnvPython); env != "" {
		source, candidates = "$"+EnvPython, []string{env}
	}
	nf := &NoPythonError{Source: source, Modules: modules}
	for _, c := range candidates {
		in, err := probeCached(ctx, c, modules)
		if err == nil {
			return in, nil
		}
		if ctx.Err() != nil {
			return Interpreter{}, ctx.Err()
		}
		nf.Tried = append(nf.Tried, Attempt{Candidate: c, Problem: err.Error()})
	}
	return Interpreter{}, nf
}

var probeCache sync.Map // key string -> Interpreter

func probeCached(ctx context.Context, candidate string, modules []string) (Interpreter, error) {
	path, err := exec.LookPath(candidate)
	if err != nil {
		return Interpreter{}, errors.New("not found")
	}
	key := path + "\x00" + strings.Join(modules, ",")
	if in, ok := probeCache.Load(key); ok {
		return in.(Interpreter), nil
	}
	in, err := probe(ctx, path, modules)
	if err == nil {
		probeCache.Store(key, in)
	}
	return in, err
}

// probeScript prints one JSON object: the version and, per module, the import
// error text ("" when it imported).
const probeScript = `import importlib, json, platform, sys, sysconfig
res = {"version": platform.python_version(), "ok": sys.version_info >= (3, 11), "missing": {},
       "executable": sys.executable,
       "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
       "gil_enabled": bool(getattr(sys, "_is_gil_enabled", lambda: True)())}
for m in sys.argv[1:]:
    try:
        importlib.import_module(m)
    except Exception as e:
        res["missing"][m] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(res))
`

func probe(ctx context.Context, path string, modules []string) (Interpreter, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	args := append([]string{"-c", probeScript}, modules...)
	out, err := exec.CommandContext(ctx, path, args...).Output()
	if err != nil {
		return Interpreter{}, fmt.Errorf("%s does not run: %v", path, err)
	}
	var res struct {
		Version      string            `json:"version"`
		OK           bool              `json:"ok"`
		Missing      map[string]string `json:"missing"`
		FreeThreaded bool              `json:"free_threaded"`
		GILEnabled   bool              `json:"gil_enabled"`
		Executable   string            `json:"executable"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return Interpreter{}, fmt.Errorf("%s: unexpected probe output %q", path, out)
	}
	if !res.OK {
		return Interpreter{}, fmt.Errorf("%s is Python %s; 3.11 or newer is needed", path, res.Version)
	}
	var missing []string
	for _, m := range modules {
		if why, bad := res.Missing[m]; bad {
			missing = append(missing, fmt.Sprintf("cannot import %s (%s)", m, why))
		}
	}
	if len(missing) > 0 {
		return Interpreter{}, fmt.Errorf("%s (Python %s): %s", path, res.Version, strings.Join(missing, "; "))
	}
	return Interpreter{Path: realExecutable(path, res.Executable), Version: res.Version, FreeThreaded: res.FreeThreaded, GILEnabled: res.GILEnabled}, nil
}

// realExecutable prefers the interpreter's own sys.executable to the path it
// was found by: a version manager's shim (pyenv's is a shell script that runs
// more scripts before it execs Python) then costs nothing per worker start, and
// a worker's pid is Python's from its first instruction. A virtual
// environment's sys.executable is its own bin/python, so it stays in force.
func realExecutable(found, reported string) string {
	if reported == "" || !filepath.IsAbs(reported) {
		return found
	}
	if st, err := os.Stat(reported); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return found
	}
	return reported
}
