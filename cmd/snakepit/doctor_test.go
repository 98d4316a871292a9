package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// goodPython is the interpreter the repository's setup gives grpcio and
// protobuf; the adapter tests run on it.
const goodPython = "/usr/bin/python3"

const adapterDir = "../../testdata/pyadapters"

// doctor runs "snakepit doctor args..." in-process and returns its output
// and exit status.
func doctor(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, append([]string{"doctor"}, args...), &out, &errOut)
	if errOut.Len() > 0 {
		t.Logf("stderr:\n%s", errOut.String())
	}
	t.Logf("exit %d, output:\n%s", code, out.String())
	return out.String(), code
}

func needPython(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s is not installed", path)
	}
}

func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q", w)
		}
	}
}

func TestDoctorAllOK(t *testing.T) {
	needPython(t, goodPython)
	out, code := doctor(t, "--python", goodPython, "--python-path", adapterDir, "--adapter", "echo_tools",
		"--runtime-dir", t.TempDir())
	if code != exitOK {
		t.Errorf("exit status %d, want %d", code, exitOK)
	}
	if strings.Contains(out, "FAIL") {
		t.Error("a check failed")
	}
	wantLines(t, out,
		"ok   interpreter: "+goodPython+" (Python 3.",
		"ok   free-threading: ", "profile auto would pick ",
		"ok   transport: native",
		"ok   adapter: echo_tools imports with "+goodPython,
		"     echo(value=null): Return ``value`` unchanged.",
		"     async asleep(seconds)",
		"ok   runtime-dir: ")
}

func TestDoctorMissingPython(t *testing.T) {
	out, code := doctor(t, "--python", "/no/such/python3")
	if code != exitFailed {
		t.Errorf("exit status %d, want %d", code, exitFailed)
	}
	wantLines(t, out,
		"FAIL interpreter: no usable Python 3.11+ (from --python)",
		"     tried /no/such/python3: not found",
		"     fix: install Python 3.11 or newer")
	if strings.Contains(out, "transport:") {
		t.Error("the transport check ran without an interpreter")
	}
}

// TestDoctorGRPCMissing uses the python3 first on PATH, which in this
// repository's environment lacks grpcio.
func TestDoctorGRPCMissing(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 on PATH")
	}
	if exec.Command(py, "-c", "import grpc, google.protobuf").Run() == nil {
		t.Skipf("%s can import grpc", py)
	}
	out, code := doctor(t, "--python", py, "--transport", "grpc")
	if code != exitFailed {
		t.Errorf("exit status %d, want %d", code, exitFailed)
	}
	wantLines(t, out,
		"ok   interpreter: ",
		"FAIL transport: grpc needs grpc, google.protobuf",
		"cannot import grpc (ModuleNotFoundError",
		"     fix: install python3-grpcio python3-protobuf (Debian) or pip install 'snakepit[grpc]'",
		"--transport native")
}

func TestDoctorAdapterImportError(t *testing.T) {
	needPython(t, goodPython)
	out, code := doctor(t, "--python", goodPython, "--adapter", "no_such_module")
	if code != exitFailed {
		t.Errorf("exit status %d, want %d", code, exitFailed)
	}
	wantLines(t, out,
		"ok   transport: native",
		"FAIL adapter: no_such_module does not start with "+goodPython,
		"ModuleNotFoundError: No module named 'no_such_module'",
		"     fix: make no_such_module importable")
}

func TestDoctorBadTransportIsUsageError(t *testing.T) {
	_, code := doctor(t, "--transport", "carrier-pigeon")
	if code != exitUsage {
		t.Errorf("exit status %d, want %d", code, exitUsage)
	}
}

func TestDoctorRuntimeDirNotWritable(t *testing.T) {
	r := checkRuntimeDir("/no/such/dir")
	if r.ok || !strings.Contains(r.detail, "cannot make a private directory in /no/such/dir") {
		t.Errorf("got %+v", r)
	}
}
