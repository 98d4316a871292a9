package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/snakepit-go/snakepit"
	"github.com/snakepit-go/snakepit/profiles"
	"github.com/snakepit-go/snakepit/pyworker"
)

// doctorOptions are the flags of snakepit doctor.
type doctorOptions struct {
	python     string   // "" : $SNAKEPIT_PYTHON, then pyworker.DefaultCandidates
	transport  string   // "native" or "grpc"
	adapter    string   // "" : no adapter check
	pythonPath []string // added to the adapter worker's sys.path
	runtimeDir string   // "" : os.TempDir()
}

func newDoctorCmd() *cobra.Command {
	var o doctorOptions
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that Python workers can run here",
		Long: `doctor checks, one line each, what a snakepit runtime needs: a Python 3.11+
interpreter, its free-threading (and what the auto profile would pick), the
packages the transport needs, the adapter (when --adapter is given: a real
worker is started and asked for its tools) and the runtime directory.
A failed check is followed by how to fix it. Exit status: 0 when every check
passed, 1 when one failed, 2 on bad flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.python, "python", "", "Python interpreter to check (default: $SNAKEPIT_PYTHON, else python3, /usr/bin/python3, python)")
	f.StringVar(&o.transport, "transport", pyworker.DefaultTransport, "worker transport: native or grpc")
	f.StringVar(&o.adapter, "adapter", "", "adapter to import and list, MODULE or MODULE:Class")
	f.StringArrayVar(&o.pythonPath, "python-path", nil, "directory put on the adapter's sys.path (repeatable)")
	f.StringVar(&o.runtimeDir, "runtime-dir", "", "where the runtime makes its private directory (default: os.TempDir())")
	return cmd
}

// result is the outcome of one check.
type result struct {
	check  string
	ok     bool
	detail string
	more   []string // printed indented under the first line
	fix    string   // printed on failure
}

func (r result) print(w io.Writer) {
	status := "ok  "
	if !r.ok {
		status = "FAIL"
	}
	fmt.Fprintf(w, "%s %s: %s\n", status, r.check, r.detail)
	for _, l := range r.more {
		fmt.Fprintf(w, "     %s\n", l)
	}
	if !r.ok && r.fix != "" {
		fmt.Fprintf(w, "     fix: %s\n", r.fix)
	}
}

// run prints every check as it completes and returns errChecksFailed when
// one failed. Checks that need an interpreter are left out when none was found.
func (o *doctorOptions) run(ctx context.Context, w io.Writer) error {
	tr, err := pyworker.LookupTransport(o.transport)
	if err != nil {
		return fmt.Errorf("--transport: %w", err)
	}
	failed := false
	report := func(r result) {
		r.print(w)
		failed = failed || !r.ok
	}
	in, r := checkInterpreter(ctx, o.python)
	report(r)
	if r.ok {
		report(checkFreeThreading(in))
		r = checkTransport(ctx, in, tr)
		report(r)
	}
	if o.adapter != "" {
		report(o.checkAdapter(ctx, in, r.ok))
	}
	report(checkRuntimeDir(o.runtimeDirOrDefault()))
	if failed {
		return errChecksFailed
	}
	return nil
}

func (o *doctorOptions) runtimeDirOrDefault() string {
	if o.runtimeDir != "" {
		return o.runtimeDir
	}
	return os.TempDir()
}

func checkInterpreter(ctx context.Context, python string) (pyworker.Interpreter, result) {
	r := result{check: "interpreter"}
	in, err := pyworker.FindInterpreter(ctx, python, nil)
	var np *pyworker.NoPythonError
	switch {
	case err == nil:
		r.ok, r.detail = true, fmt.Sprintf("%s (Python %s)", in.Path, in.Version)
	case errors.As(err, &np):
		r.detail = fmt.Sprintf("no usable Python 3.11+ (from %s)", strings.Replace(np.Source, "Config.Python", "--python", 1))
		for _, a := range np.Tried {
			r.more = append(r.more, fmt.Sprintf("tried %s: %s", a.Candidate, a.Problem))
		}
		r.fix = "install Python 3.11 or newer, and pass it with --python (or set $" + pyworker.EnvPython + ")"
	default:
		r.detail, r.fix = err.Error(), "run doctor again"
	}
	return in, r
}

// checkFreeThreading is informational: it never fails.
func checkFreeThreading(in pyworker.Interpreter) result {
	build := "not a free-threaded build"
	if in.FreeThreaded {
		build = "free-threaded build"
	}
	gil := "GIL on"
	if !in.GILEnabled {
		gil = "GIL off"
	}
	p, why := profiles.Choose(profiles.Interpreter{Version: in.Version, FreeThreaded: in.FreeThreaded, GILEnabled: in.GILEnabled})
	return result{check: "free-threading", ok: true,
		detail: fmt.Sprintf("%s, %s; profile auto would pick %s (%s)", build, gil, p.Name(), why)}
}

func checkTransport(ctx context.Context, in pyworker.Interpreter, tr pyworker.Transport) result {
	r := result{check: "transport", ok: true}
	mods := tr.RequiredModules()
	if len(mods) == 0 {
		r.detail = tr.Name() + " needs only the standard library"
		return r
	}
	_, err := pyworker.FindInterpreter(ctx, in.Path, mods)
	if err == nil {
		r.detail = fmt.Sprintf("%s: %s import", tr.Name(), strings.Join(mods, ", "))
		return r
	}
	r.ok, r.detail = false, fmt.Sprintf("%s needs %s", tr.Name(), strings.Join(mods, ", "))
	var np *pyworker.NoPythonError
	if errors.As(err, &np) {
		for _, a := range np.Tried {
			r.more = append(r.more, a.Problem)
		}
	} else {
		r.more = []string{err.Error()}
	}
	r.fix = "install python3-grpcio python3-protobuf (Debian) or pip install 'snakepit[grpc]' for " + in.Path +
		", or use --transport native, which needs none"
	return r
}

// checkAdapter starts a one-worker runtime for the adapter and lists its
// tools; ready is false when the interpreter or transport check failed.
func (o *doctorOptions) checkAdapter(ctx context.Context, in pyworker.Interpreter, ready bool) result {
	r := result{check: "adapter"}
	if !ready {
		r.detail, r.fix = o.adapter+" not checked: it needs the interpreter and transport above", "fix the failures above first"
		return r
	}
	rt, err := snakepit.Start(ctx, o.adapterConfig(in))
	if err != nil {
		return adapterFailure(r, o.adapter, in, err)
	}
	defer func() { _ = rt.Stop(context.WithoutCancel(ctx)) }()
	tools, err := rt.Tools(ctx, "doctor")
	if err != nil {
		r.detail, r.fix = fmt.Sprintf("%s started but did not list its tools: %v", o.adapter, err), "run doctor again"
		return r
	}
	r.ok, r.detail = true, fmt.Sprintf("%s imports with %s; %d tools", o.adapter, in.Path, len(tools))
	for _, t := range tools {
		r.more = append(r.more, formatTool(t))
	}
	return r
}

func (o *doctorOptions) adapterConfig(in pyworker.Interpreter) snakepit.Config {
	paths := absPaths(o.pythonPath)
	return snakepit.Config{
		Python:     in.Path,
		Logger:     hclog.NewNullLogger(), // a boot failure comes back as a *BootError
		RuntimeDir: o.runtimeDir,
		Pools: []snakepit.PoolConfig{{Name: "doctor", Adapter: o.adapter, Size: 1,
			Transport: o.transport, PythonPath: paths}},
	}
}

// bootErrorLines is how many of the last lines of a Python traceback or of
// the worker's stderr are shown.
const bootErrorLines = 6

func adapterFailure(r result, adapter string, in pyworker.Interpreter, err error) result {
	var be *snakepit.BootError
	if !errors.As(err, &be) {
		lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
		r.detail, r.more, r.fix = adapter+": "+lines[0], lines[1:], "fix what the error says, then run doctor again"
		return r
	}
	r.detail = fmt.Sprintf("%s does not start with %s: %s", adapter, in.Path, bootSummary(be))
	if be.Traceback != "" {
		r.more = lastLines(be.Traceback, bootErrorLines)
	}
	if be.Stderr != "" {
		r.more = append(r.more, "last stderr lines:")
		r.more = append(r.more, lastLines(be.Stderr, bootErrorLines)...)
	}
	r.fix = fmt.Sprintf("make %s importable by %s: check the module (and :Class) name, pass the directory that holds it with --python-path, and install what it imports",
		adapter, in.Path)
	return r
}

// bootSummary is the one-line reason a worker did not boot.
func bootSummary(be *snakepit.BootError) string {
	switch {
	case be.Type != "":
		return be.Type + ": " + be.Message
	case be.Exit != nil:
		return fmt.Sprintf("the worker ended before its handshake (%s)", be.Exit)
	default:
		return be.Message
	}
}

func lastLines(s string, n int) []string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// formatTool renders a tool as a Python-like signature and the first line
// of its doc, e.g. "echo(value=null): Return value unchanged.".
func formatTool(t snakepit.Tool) string {
	params := make([]string, len(t.Params))
	for i, p := range t.Params {
		params[i] = p.Name
		if p.Default != "" {
			params[i] += "=" + p.Default
		}
	}
	s := t.Name + "(" + strings.Join(params, ", ") + ")"
	if t.Async {
		s = "async " + s
	}
	if doc, _, _ := strings.Cut(strings.TrimSpace(t.Doc), "\n"); doc != "" {
		s += ": " + doc
	}
	return s
}

func checkRuntimeDir(dir string) result {
	r := result{check: "runtime-dir", fix: "pass --runtime-dir (Config.RuntimeDir) a directory you can write, or set $TMPDIR"}
	d, err := os.MkdirTemp(dir, "snakepit-doctor-")
	if err != nil {
		r.detail = fmt.Sprintf("cannot make a private directory in %s: %v", dir, err)
		return r
	}
	defer func() { _ = os.RemoveAll(d) }()
	fi, err := os.Stat(d)
	if err == nil && fi.Mode().Perm() != 0o700 {
		err = fmt.Errorf("its mode is %#o, not 0700", fi.Mode().Perm())
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(d, "probe"), nil, 0o600)
	}
	if err != nil {
		r.detail = fmt.Sprintf("made %s but it is not usable: %v", d, err)
		return r
	}
	if err := os.RemoveAll(d); err != nil {
		r.detail = fmt.Sprintf("cannot remove %s: %v", d, err)
		return r
	}
	r.ok, r.detail = true, fmt.Sprintf("%s is writable; made and removed a private 0700 directory", dir)
	return r
}
