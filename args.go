package snakepit

import (
	"encoding/json"
	"fmt"
	"reflect"
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
	return data, binary, nil
}

func kindOf(v any) string {
	if v == nil {
		return "null"
	}
	return reflect.TypeOf(v).String()
}
