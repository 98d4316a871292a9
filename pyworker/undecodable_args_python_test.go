package pyworker

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/snakepit-go/snakepit/pyworker/pb"
)

// TestPythonUndecodableArgsFailOnlyTheCall sends, below the runtime's own
// checks, arguments that are well-formed JSON a worker cannot decode:
// nested 100,000 levels deep (RecursionError in Python's decoder) or an
// integer of 5,000 digits (over Python's int conversion limit). Each is
// answered BAD_ARGUMENTS, as a call and as a stream, and the same
// connection then serves the same process. Before the fix the native
// worker's reader died on them and closed the connection.
func TestPythonUndecodableArgsFailOnlyTheCall(t *testing.T) {
	undecodable := map[string][]byte{
		"deep":     []byte(`{"value":` + strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000) + `}`),
		"huge int": []byte(`{"value":` + strings.Repeat("9", 5_000) + `}`),
	}
	forTransports(t, func(t *testing.T, tr Transport) {
		h, _ := launchWorker(t, tr, func(s *Spec) { s.MaxMessageBytes = 4 << 20 })
		ctx := testCtx(t)
		pid := h.Pid()
		for name, args := range undecodable {
			r, err := h.Conn.Execute(ctx, &pb.ExecuteRequest{RequestId: "bad-" + name, Tool: "echo", ArgsJson: args})
			if err != nil || r.GetError().GetKind() != pb.ErrorInfo_KIND_BAD_ARGUMENTS {
				t.Fatalf("%s: %v, %v; want BAD_ARGUMENTS", name, r, err)
			}
			s, err := h.Conn.ExecuteStream(ctx, &pb.ExecuteRequest{RequestId: "bad-stream-" + name, Tool: "count", ArgsJson: args}, 2)
			if err != nil {
				t.Fatal(err)
			}
			_, err = collect(t, s)
			var re *RemoteError
			if !errors.As(err, &re) || re.Info.GetKind() != pb.ErrorInfo_KIND_BAD_ARGUMENTS {
				t.Fatalf("%s as a stream: %v; want BAD_ARGUMENTS", name, err)
			}
		}
		r, err := h.Conn.Execute(ctx, &pb.ExecuteRequest{RequestId: "after", Tool: "pid"})
		if err != nil || string(r.GetResultJson()) != strconv.Itoa(pid) {
			t.Fatalf("pid after the bad calls: %v, %v; want %d", r, err, pid)
		}
		if hr, err := h.Conn.Health(ctx); err != nil || !hr.GetOk() {
			t.Fatalf("health after the bad calls: %v, %v", hr, err)
		}
	})
}
