package wire

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestParseCallbackTooDeepIsAnArgumentError: args nested deeper than
// encoding/json decodes are that callback's bad arguments (answered
// BAD_ARGUMENTS), not a bad frame that would end the connection.
func TestParseCallbackTooDeepIsAnArgumentError(t *testing.T) {
	deep := []byte(strings.Repeat("[", 20_000) + strings.Repeat("]", 20_000))
	parts, _ := CallbackBody("sink", "r-1", append(append([]byte(`{"value":`), deep...), '}'), nil)
	_, err := ParseCallback(bytes.Join(parts, nil))
	var argErr *ArgumentError
	if !errors.As(err, &argErr) || !strings.Contains(err.Error(), "10000 levels") {
		t.Fatalf("got %v (%T), want an *ArgumentError naming the limit", err, err)
	}
	parts, _ = CallbackBody("sink", "r-1", []byte(`{"value":[[1]]}`), nil)
	if call, err := ParseCallback(bytes.Join(parts, nil)); err != nil || string(call.Args) != `{"value":[[1]]}` {
		t.Fatalf("a shallow one: %v, %v", call, err)
	}
}
