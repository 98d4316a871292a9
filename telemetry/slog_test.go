package telemetry

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestSlogRecordsReachHclogOneLevelLower(t *testing.T) {
	var buf bytes.Buffer
	l := hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: &buf})
	s := SlogToHclog(l).With("system", "x")
	s.Info("routine", "actor", "pool-a")
	s.Error("bad", "reason", "boom")
	s.Debug("hidden") // slog Debug becomes Trace: below the logger's level
	out := buf.String()
	for _, want := range []string{"[DEBUG] routine: system=x actor=pool-a", "[WARN]  bad: system=x reason=boom"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hidden") {
		t.Errorf("a record below the level was logged:\n%s", out)
	}
}
