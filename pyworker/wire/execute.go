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
	names := make([]string, 0, len(binary))
	for name := range binary {
		names = append(names, name)
	}
	sort.Strings(names)
	meta := make([]byte, 4, 96+len(args)+len(id)+len(tool)+16*len(names))
	meta = append(meta, `{"id":`...)
	meta = appendJSONString(meta, id)
	meta = append(meta, `,"tool":`...)
	meta = appendJSONString(meta, tool)
	meta = append(meta, `,"deadline_ns":`...)
	meta = strconv.AppendInt(meta, deadlineNs, 10)
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
	parts, total := [][]byte{meta}, len(meta)
	for _, name := range names {
		parts = append(parts, binary[name])
		total += len(binary[name])
	}
	return parts, total
}

func putMetaLength(meta []byte) {
	binary.BigEndian.PutUint32(meta[:4], uint32(len(meta)-4))
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always encodes
	return append(b, q...)
}
