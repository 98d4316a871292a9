package snakepit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// latestDeadline is the latest deadline the protocol carries: an int64 of
// Unix nanoseconds (in the year 2262).
var latestDeadline = time.Unix(0, math.MaxInt64)

// wireDeadline is a call's deadline as the protocol carries it, in Unix
// nanoseconds. A later one (a context.WithTimeout of math.MaxInt64, say)
// is capped at latestDeadline: time.Time.UnixNano would overflow, and the
// worker would see a deadline long past, or a negative one.
func wireDeadline(deadline time.Time) int64 {
	if deadline.After(latestDeadline) {
		return math.MaxInt64
	}
	return deadline.UnixNano()
}

// checkToolName refuses a tool name no worker can have: an empty one, or
// one that is not valid UTF-8 (which the gRPC transport cannot even send).
func checkToolName(pool, tool string) error {
	if tool == "" {
		return callError(pool, tool, ErrUnknownTool, "the tool name is empty: name one of the pool's tools (Runtime.Tools lists them)")
	}
	if !utf8.ValidString(tool) {
		return callError(pool, tool, ErrUnknownTool, fmt.Sprintf("the tool name %q is not valid UTF-8, "+
			"and no tool has such a name: name one of the pool's tools (Runtime.Tools lists them)", tool))
	}
	return nil
}

// encodeArgs turns a call's arguments into one JSON object plus the values
// carried as raw bytes. args may be nil (no arguments), a map with string
// keys, or a struct (encoded as encoding/json does). In a map[string]any,
// every []byte value travels raw, never as base64 inside the JSON.
func encodeArgs(args any) ([]byte, map[string][]byte, error) {
	if args == nil {
		return nil, nil, nil
	}
	var binary map[string][]byte
	if m, ok := args.(map[string]any); ok {
		rest := make(map[string]any, len(m))
		for k, v := range m {
			if b, isBytes := v.([]byte); isBytes {
				if !utf8.ValidString(k) { // a name travels as a string even when its value is raw
					return nil, nil, invalidUTF8Error(m)
				}
				if binary == nil {
					binary = map[string][]byte{}
				}
				binary[k] = b
				continue
			}
			rest[k] = v
		}
		args = rest
	}
	data, err := json.Marshal(args)
	if err != nil {
		if strings.Contains(err.Error(), "exceeded max depth") { // a json.RawMessage deeper than encoding/json goes
			return nil, nil, tooDeepError()
		}
		return nil, nil, fmt.Errorf("arguments cannot be encoded as JSON: %v", err)
	}
	if len(data) == 0 || data[0] != '{' {
		return nil, nil, fmt.Errorf("arguments must encode to a JSON object of keyword arguments (a map or a struct), not %s", kindOf(args))
	}
	if replacedInvalidUTF8(data) || !utf8.Valid(data) { // the latter: a json.RawMessage passes its bytes as they are
		return nil, nil, invalidUTF8Error(args)
	}
	if nestsDeeper(data, MaxArgsDepth) {
		return nil, nil, tooDeepError()
	}
	return data, binary, nil
}

// MaxArgsDepth is the deepest nesting of JSON arrays and objects a call's
// arguments may have, the arguments object itself being level 1: a call
// whose arguments nest deeper fails with ErrBadArguments before it is sent.
// A worker's JSON decoder is recursive and bounded by Python's recursion
// limit (about 990 levels on CPython 3.11); this keeps every call far within
// it (docs/wire-format.md, "Limits").
const MaxArgsDepth = 512

func tooDeepError() error {
	return fmt.Errorf("the arguments nest more than %d levels of arrays and objects deep, the limit "+
		"(snakepit.MaxArgsDepth) for what a worker's JSON decoder takes; flatten them, or send the "+
		"structure as a string or []byte", MaxArgsDepth)
}

// nestsDeeper reports whether the JSON text data (valid, as encoding/json
// writes it) nests arrays and objects more than limit levels deep.
func nestsDeeper(data []byte, limit int) bool {
	if bytes.Count(data, []byte{'['})+bytes.Count(data, []byte{'{'}) <= limit {
		return false // brackets inside strings count here too: an upper bound
	}
	depth, inString := 0, false
	for i := 0; i < len(data); i++ {
		switch c := data[i]; {
		case inString && c == '\\':
			i++ // the escaped byte, perhaps a quote
		case c == '"':
			inString = !inString
		case inString:
		case c == '[' || c == '{':
			if depth++; depth > limit {
				return true
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return false
}

func invalidUTF8Error(args any) error {
	return fmt.Errorf("a string%s is not valid UTF-8, and JSON would silently replace its bytes with U+FFFD; "+
		"send binary data as a []byte value of a map[string]any (it travels raw)", invalidUTF8Arg(args))
}

var escapedReplacement = []byte(`\ufffd`)

// replacedInvalidUTF8 reports whether encoding/json replaced invalid UTF-8
// in a string or a key: it writes each such byte as the escape \ufffd, and
// a valid U+FFFD as itself, never escaped.
func replacedInvalidUTF8(data []byte) bool {
	for i := 0; ; {
		j := bytes.Index(data[i:], escapedReplacement)
		if j < 0 {
			return false
		}
		j += i
		backslashes := 0
		for k := j - 1; k >= 0 && data[k] == '\\'; k-- {
			backslashes++
		}
		if backslashes%2 == 0 { // not the text \ufffd behind an escaped backslash
			return true
		}
		i = j + 1
	}
}

// invalidUTF8Arg names, for the error message, the argument of a map whose
// name or string value is not valid UTF-8; a string deeper down or in a
// struct is only said to be "in the arguments".
func invalidUTF8Arg(args any) string {
	m, _ := args.(map[string]any)
	for _, k := range slices.Sorted(maps.Keys(m)) { // the same message every time
		if !utf8.ValidString(k) {
			return fmt.Sprintf(" (the argument name %q)", k)
		}
		if s, isString := m[k].(string); isString && !utf8.ValidString(s) {
			return fmt.Sprintf(" (argument %q)", k)
		}
	}
	return " in the arguments"
}

func kindOf(v any) string {
	if v == nil {
		return "null"
	}
	return reflect.TypeOf(v).String()
}
