package snakepit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"unicode/utf8"
)

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
		return nil, nil, fmt.Errorf("arguments cannot be encoded as JSON: %v", err)
	}
	if len(data) == 0 || data[0] != '{' {
		return nil, nil, fmt.Errorf("arguments must encode to a JSON object of keyword arguments (a map or a struct), not %s", kindOf(args))
	}
	if replacedInvalidUTF8(data) {
		return nil, nil, invalidUTF8Error(args)
	}
	return data, binary, nil
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
