// Command snakepit is the operator's tool for a snakepit installation:
//
//   - doctor: checks that Python workers can run here (doctor.go);
//   - inspect: shows a running runtime's pools, workers and saturation,
//     read from its admin endpoint (inspect.go);
//   - diagnose scaling: compares the process and the thread profile of an
//     adapter at rising concurrency (diagnose.go).
//
// Each subcommand lives in its own file and is registered in newRootCmd.
// Run it from the repository root: go run ./cmd/snakepit --help.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1 // a check failed
	exitUsage  = 2 // bad flags or arguments, or an error before any check ran
)

// errChecksFailed is returned by a command whose report already says what
// failed; main only turns it into exitFailed.
var errChecksFailed = errors.New("one or more checks failed")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errChecksFailed):
		return exitFailed
	default:
		fmt.Fprintln(stderr, "snakepit:", err)
		return exitUsage
	}
}

// newRootCmd builds the "snakepit" command with every subcommand. A new
// subcommand is a newXxxCmd() in its own file, added here.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "snakepit",
		Short:         "Check and inspect a snakepit installation",
		Version:       version(),
		SilenceUsage:  true, // a failed check is not a usage mistake
		SilenceErrors: true, // run prints errors once, with the exit status
	}
	root.AddCommand(newDoctorCmd())
	root.AddCommand(newDiagnoseCmd())
	root.AddCommand(newInspectCmd())
	return root
}

// version is the module version this binary was built from ("(devel)" for
// go run and builds from a checkout).
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// absPaths makes each of dirs absolute, so a runtime started from here
// finds them whatever the workers' working directory; a path that cannot be
// made absolute is kept as given.
func absPaths(dirs []string) []string {
	out := make([]string, len(dirs))
	for i, d := range dirs {
		if abs, err := filepath.Abs(d); err == nil {
			d = abs
		}
		out[i] = d
	}
	return out
}
