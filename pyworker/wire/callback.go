package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// CreditBody is the body of a CREDIT frame granting n more chunks (n >= 1).
func CreditBody(n uint32) []byte {
	return binary.BigEndian.AppendUint32(make([]byte, 0, 4), n)
}

// ParseCredit decodes a CREDIT body: exactly 4 bytes, a count of at least 1.
func ParseCredit(body []byte) (uint32, error) {
	if len(body) != 4 {
		return 0, &FrameError{Problem: fmt.Sprintf("CREDIT body of %d bytes, want 4", len(body))}
	}
	n := binary.BigEndian.Uint32(body)
	if n == 0 {
		return 0, &FrameError{Problem: "CREDIT of 0 chunks (must be at least 1)"}
	}
	return n, nil
}

// CallbackCall is a parsed CALLBACK body.
type CallbackCall struct {
	// Name is the registered name the tool called.
	Name string
	// Parent is the request id of the call whose tool made the callback.
	Parent string
	// Args is the JSON text of the keyword arguments ("{}" when none).
	Args []byte
	// Binary holds the bytes arguments, each aliasing the frame body (nil
	// when none).
	Binary map[string][]byte
}

// ArgumentError means a CALLBACK body is well framed but its arguments are
// unusable; the callback is answered CALLBACK_ERROR kind BAD_ARGUMENTS and
// the connection goes on.
type ArgumentError struct{ Problem string }

func (e *ArgumentError) Error() string { return "bad callback arguments: " + e.Problem }

// ParseCallback decodes a CALLBACK body, laid out as an EXECUTE body:
// u32 meta length | meta JSON {"name", "parent", "args", "bin"} | binaries.
//
// A body whose layout does not parse gives a *FrameError (a bad frame: the
// meta length, meta that is not a JSON object, "name" or "parent" that is
// not a string, a malformed or duplicated "bin" entry, binary lengths that
// do not add up to the rest of the body), as the worker treats EXECUTE. A
// well-framed body whose "args" is not a JSON object, nests deeper than
// encoding/json decodes, or names a binary argument also in "args", gives
// an *ArgumentError.
func ParseCallback(body []byte) (*CallbackCall, error) {
	size := len(body)
	if size < 4 {
		return nil, &FrameError{Problem: fmt.Sprintf("CALLBACK body of %d bytes has no 4-byte meta length", size)}
	}
	metaLen := int64(binary.BigEndian.Uint32(body))
	if metaLen > int64(size-4) {
		return nil, &FrameError{Problem: fmt.Sprintf("CALLBACK meta length %d exceeds the %d bytes that follow it", metaLen, size-4)}
	}
	var meta struct {
		Name   json.RawMessage `json:"name"`
		Parent json.RawMessage `json:"parent"`
		Args   json.RawMessage `json:"args"`
		Bin    json.RawMessage `json:"bin"`
	}
	raw := bytes.TrimSpace(body[4 : 4+metaLen])
	if len(raw) == 0 || raw[0] != '{' {
		return nil, &FrameError{Problem: "CALLBACK meta is not a JSON object"}
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		if strings.Contains(err.Error(), "exceeded max depth") { // only "args" can nest
			return nil, &ArgumentError{Problem: "args nest deeper than the 10000 levels Go's encoding/json decodes"}
		}
		return nil, &FrameError{Problem: fmt.Sprintf("CALLBACK meta is not a JSON object: %v", err)}
	}
	call := &CallbackCall{}
	if err := optionalString(meta.Name, &call.Name); err != nil {
		return nil, &FrameError{Problem: "CALLBACK meta field 'name' must be a string"}
	}
	if err := optionalString(meta.Parent, &call.Parent); err != nil {
		return nil, &FrameError{Problem: "CALLBACK meta field 'parent' must be a string"}
	}
	var bins [][]json.RawMessage
	if !isNull(meta.Bin) {
		if err := json.Unmarshal(meta.Bin, &bins); err != nil {
			return nil, &FrameError{Problem: "CALLBACK meta field 'bin' must be a list of [name, length] pairs"}
		}
	}
	offset := 4 + metaLen
	for _, entry := range bins {
		var name string
		var length int64
		if len(entry) != 2 || json.Unmarshal(entry[0], &name) != nil || json.Unmarshal(entry[1], &length) != nil || length < 0 {
			return nil, &FrameError{Problem: "CALLBACK meta 'bin' has an entry that is not a [name, length] pair"}
		}
		if _, dup := call.Binary[name]; dup {
			return nil, &FrameError{Problem: fmt.Sprintf("CALLBACK meta 'bin' names binary argument %q twice", name)}
		}
		if length > int64(size)-offset {
			return nil, &FrameError{Problem: fmt.Sprintf("CALLBACK binary argument %q of %d bytes runs past the end of the %d-byte body", name, length, size)}
		}
		if call.Binary == nil {
			call.Binary = make(map[string][]byte, len(bins))
		}
		call.Binary[name] = body[offset : offset+length : offset+length]
		offset += length
	}
	if offset != int64(size) {
		return nil, &FrameError{Problem: fmt.Sprintf("CALLBACK body has %d bytes after its meta and binary arguments", int64(size)-offset)}
	}
	args := bytes.TrimSpace(meta.Args)
	switch {
	case isNull(args):
		call.Args = []byte("{}")
	case args[0] != '{':
		return nil, &ArgumentError{Problem: "args must be a JSON object"}
	default:
		call.Args = args
	}
	if len(call.Binary) > 0 {
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(call.Args, &keys); err != nil {
			return nil, &ArgumentError{Problem: "args must be a JSON object: " + err.Error()}
		}
		for name := range call.Binary {
			if _, both := keys[name]; both {
				return nil, &ArgumentError{Problem: fmt.Sprintf("argument %q is both in args and a binary argument", name)}
			}
		}
	}
	return call, nil
}

func isNull(v json.RawMessage) bool {
	return len(v) == 0 || string(v) == "null"
}

func optionalString(v json.RawMessage, out *string) error {
	if isNull(v) {
		return nil
	}
	return json.Unmarshal(v, out)
}

// CallbackBody returns the parts of a CALLBACK body (the worker's side of
// the exchange; for tests and tools) and its size. args is the JSON object
// of keyword arguments (nil or empty for none).
func CallbackBody(name, parent string, args []byte, binary map[string][]byte) ([][]byte, int) {
	names := make([]string, 0, len(binary))
	for n := range binary {
		names = append(names, n)
	}
	sort.Strings(names)
	meta := make([]byte, 4, 64+len(args)+len(name)+len(parent)+16*len(names))
	meta = append(meta, `{"name":`...)
	meta = appendJSONString(meta, name)
	meta = append(meta, `,"parent":`...)
	meta = appendJSONString(meta, parent)
	meta = appendBinAndArgs(meta, names, binary, args)
	parts, total := [][]byte{meta}, len(meta)
	for _, n := range names {
		parts = append(parts, binary[n])
		total += len(binary[n])
	}
	return parts, total
}

// CallbackErrorBody is the body of a CALLBACK_ERROR frame.
func CallbackErrorBody(kind, message string) []byte {
	b, _ := json.Marshal(struct {
		Kind    string `json:"kind"`
		Message string `json:"message"`
	}{kind, message})
	return b
}
