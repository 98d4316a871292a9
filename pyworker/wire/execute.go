package wire

import (
	"encoding/binary"
	"encoding/json"
	"sort"
	"strconv"
)

// ExecuteBody returns the parts of an EXECUTE body: the meta length and meta
// JSON, then every binary argument, ready for a vectored write. args is the
// JSON object of keyword arguments (nil or empty for none).
func ExecuteBody(id, tool string, deadlineNs int64, args []byte, binary map[string][]byte) ([][]byte, int) {
	return ExecuteBodyWith(id, tool, deadlineNs, args, binary, ExecuteOptions{})
}

// ExecuteOptions are the optional EXECUTE meta fields of wire version 2.
type ExecuteOptions struct {
	// Session is the session the call belongs to ("" for none): meta "session".
	Session string
	// Stream, when >= 1, makes the call a streaming one with that initial
	// credit: meta "stream".
	Stream int
}

// ExecuteBodyWith is ExecuteBody with the optional fields of opts.
func ExecuteBodyWith(id, tool string, deadlineNs int64, args []byte, binary map[string][]byte, opts ExecuteOptions) ([][]byte, int) {
	names := make([]string, 0, len(binary))
	for name := range binary {
		names = append(names, name)
	}
	sort.Strings(names)
	meta := make([]byte, 4, 96+len(args)+len(id)+len(tool)+len(opts.Session)+16*len(names))
	meta = append(meta, `{"id":`...)
	meta = appendJSONString(meta, id)
	meta = append(meta, `,"tool":`...)
	meta = appendJSONString(meta, tool)
	meta = append(meta, `,"deadline_ns":`...)
	meta = strconv.AppendInt(meta, deadlineNs, 10)
	if opts.Session != "" {
		meta = append(meta, `,"session":`...)
		meta = appendJSONString(meta, opts.Session)
	}
	if opts.Stream > 0 {
		meta = append(meta, `,"stream":`...)
		meta = strconv.AppendInt(meta, int64(opts.Stream), 10)
	}
	meta = appendBinAndArgs(meta, names, binary, args)
	parts, total := [][]byte{meta}, len(meta)
	for _, name := range names {
		parts = append(parts, binary[name])
		total += len(binary[name])
	}
	return parts, total
}

// appendBinAndArgs ends a meta object: its "bin" list, "args" and the
// closing brace; then it fills in the meta length.
func appendBinAndArgs(meta []byte, names []string, binary map[string][]byte, args []byte) []byte {
	meta = append(meta, `,"bin":[`...)
	for i, name := range names {
		if i > 0 {
			meta = append(meta, ',')
		}
		meta = append(meta, '[')
		meta = appendJSONString(meta, name)
		meta = append(meta, ',')
		meta = strconv.AppendInt(meta, int64(len(binary[name])), 10)
		meta = append(meta, ']')
	}
	meta = append(meta, `],"args":`...)
	if len(args) == 0 {
		meta = append(meta, "{}"...)
	} else {
		meta = append(meta, args...)
	}
	meta = append(meta, '}')
	putMetaLength(meta)
	return meta
}

func putMetaLength(meta []byte) {
	binary.BigEndian.PutUint32(meta[:4], uint32(len(meta)-4))
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always encodes
	return append(b, q...)
}
