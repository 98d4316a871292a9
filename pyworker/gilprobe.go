package pyworker

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
)

// gilProbe imports a module the way a worker would and reports whether the
// GIL is on afterwards and which module's import switched it on (from
// Python's RuntimeWarning).
const gilProbe = `
import importlib, json, re, sys, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    importlib.import_module(sys.argv[1])
by = ""
for w in caught:
    m = re.search(r"GIL\) has been enabled to load module '([^']+)'", str(w.message))
    if m:
        by = m.group(1)
is_on = getattr(sys, "_is_gil_enabled", lambda: True)
print(json.dumps({"gil": bool(is_on()), "by": by}))
`

// AdapterGIL reports whether importing the spec's adapter module switches
// the GIL of its (free-threaded) interpreter on, and which module did it. It
// runs the interpreter once with the workers' environment; an adapter that
// does not import is an error (its workers would report it on boot).
func (s Spec) AdapterGIL(ctx context.Context) (enabled bool, by string, err error) {
	module, _, _ := strings.Cut(s.Adapter, ":")
	cmd := exec.CommandContext(ctx, s.Interpreter.Path, "-c", gilProbe, module)
	cmd.Env, cmd.Dir = s.environ(), s.Dir
	out, err := cmd.Output()
	if err != nil {
		return false, "", fmt.Errorf("import %s to check its GIL: %w", module, err)
	}
	var r struct {
		GIL bool   `json:"gil"`
		By  string `json:"by"`
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		return false, "", fmt.Errorf("import %s to check its GIL: unreadable answer %q", module, out)
	}
	return r.GIL, r.By, nil
}
