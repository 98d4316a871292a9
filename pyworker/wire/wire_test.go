package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

func frameBytes(h Header, body []byte) []byte {
	b := make([]byte, HeaderSize+len(body))
	h.Put(b)
	copy(b[HeaderSize:], body)
	return b
}

func TestReadFrameRoundTrip(t *testing.T) {
	body := []byte(`{"version":1}`)
	in := frameBytes(NewHeader(Result, FlagRaw, 42, len(body)), body)
	h, got, err := ReadFrame(bytes.NewReader(in), make([]byte, HeaderSize), 1024)
	if err != nil || h.Type != Result || h.Flags != FlagRaw || h.Stream != 42 || !bytes.Equal(got, body) {
		t.Fatalf("got %+v %q %v", h, got, err)
	}
}

func TestBadFrames(t *testing.T) {
	good := NewHeader(Execute, 0, 1, 4)
	cases := []struct {
		name  string
		input []byte
		want  string
	}{
		{"wrong version", func() []byte { h := good; h.Version = 2; return frameBytes(h, []byte("abcd")) }(), "wire version 2"},
		{"unknown type", func() []byte { h := good; h.Type = 77; return frameBytes(h, []byte("abcd")) }(), "unknown frame type 77"},
		{"type zero", func() []byte { h := good; h.Type = 0; return frameBytes(h, []byte("abcd")) }(), "unknown frame type 0"},
		{"flags on execute", func() []byte { h := good; h.Flags = FlagRaw; return frameBytes(h, []byte("abcd")) }(), "flags 0x1 not allowed on EXECUTE"},
		{"unknown result flag", func() []byte { h := NewHeader(Result, 2, 1, 0); return frameBytes(h, nil) }(), "flags 0x2"},
		{"oversized", frameBytes(NewHeader(Execute, 0, 1, 1<<20), nil), "exceeds the limit of 1024"},
		{"truncated header", []byte{0, 0, 0, 4, 1}, "truncated"},
		{"truncated body", frameBytes(good, []byte("abcd"))[:HeaderSize+2], "truncated"},
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "bad frame"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := ReadFrame(bytes.NewReader(c.input), make([]byte, HeaderSize), 1024)
			if !errors.Is(err, ErrBadFrame) || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
				t.Fatalf("got %v, want a bad frame error containing %q", err, c.want)
			}
		})
	}
	if _, _, err := ReadFrame(bytes.NewReader(nil), make([]byte, HeaderSize), 1024); err != io.EOF {
		t.Fatalf("clean end between frames: got %v, want io.EOF", err)
	}
}

func TestExecuteBody(t *testing.T) {
	parts, size := ExecuteBody(`req-"1"`, "echo", 123, []byte(`{"x":1}`), map[string][]byte{"b": {9, 8}, "a": {7}})
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	if size != len(all) {
		t.Fatalf("size %d, parts hold %d", size, len(all))
	}
	n := binary.BigEndian.Uint32(all[:4])
	var meta struct {
		ID         string         `json:"id"`
		Tool       string         `json:"tool"`
		DeadlineNs int64          `json:"deadline_ns"`
		Args       map[string]int `json:"args"`
		Bin        [][]any        `json:"bin"`
	}
	if err := json.Unmarshal(all[4:4+n], &meta); err != nil {
		t.Fatalf("meta %q: %v", all[4:4+n], err)
	}
	if meta.ID != `req-"1"` || meta.Tool != "echo" || meta.DeadlineNs != 123 || meta.Args["x"] != 1 || len(meta.Bin) != 2 {
		t.Fatalf("meta = %+v", meta)
	}
	if rest := all[4+n:]; !bytes.Equal(rest, []byte{7, 9, 8}) { // sorted by name: a, then b
		t.Fatalf("binary parts = %v", rest)
	}
	parts, _ = ExecuteBody("r", "t", 0, nil, nil)
	if !bytes.HasSuffix(parts[0], []byte(`"bin":[],"args":{}}`)) {
		t.Fatalf("empty args meta = %q", parts[0][4:])
	}
}

// FuzzReadFrame: no input makes ReadFrame panic, and a frame it accepts
// re-encodes to the same bytes.
func FuzzReadFrame(f *testing.F) {
	f.Add(frameBytes(NewHeader(Hello, 0, 0, 2), []byte("{}")))
	f.Add(frameBytes(NewHeader(Result, FlagRaw, 7, 3), []byte{1, 2, 3}))
	f.Add([]byte("garbage that is not a frame"))
	f.Add([]byte{0, 0, 0, 0, 1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		h, body, err := ReadFrame(bytes.NewReader(in), make([]byte, HeaderSize), 4096)
		if err != nil {
			return
		}
		if out := frameBytes(h, body); !bytes.Equal(out, in[:len(out)]) {
			t.Fatalf("re-encoded %x, read %x", out, in[:len(out)])
		}
	})
}
