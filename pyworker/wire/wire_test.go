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
		{"wrong version", func() []byte { h := good; h.Version = 1; return frameBytes(h, []byte("abcd")) }(), "wire version 1, this side speaks 2"},
		{"unknown type", func() []byte { h := good; h.Type = 77; return frameBytes(h, []byte("abcd")) }(), "unknown frame type 77"},
		{"type zero", func() []byte { h := good; h.Type = 0; return frameBytes(h, []byte("abcd")) }(), "unknown frame type 0"},
		{"flags on execute", func() []byte { h := good; h.Flags = FlagRaw; return frameBytes(h, []byte("abcd")) }(), "flags 0x1 not allowed on EXECUTE"},
		{"unknown result flag", func() []byte { h := NewHeader(Result, 2, 1, 0); return frameBytes(h, nil) }(), "flags 0x2"},
		{"type past the last", func() []byte { h := good; h.Type = CallbackError + 1; return frameBytes(h, []byte("abcd")) }(), "unknown frame type 15"},
		{"raw flag on credit", func() []byte { h := NewHeader(Credit, FlagRaw, 1, 4); return frameBytes(h, []byte{0, 0, 0, 1}) }(), "flags 0x1 not allowed on CREDIT"},
		{"raw flag on callback", func() []byte { h := NewHeader(Callback, FlagRaw, 1, 4); return frameBytes(h, []byte("abcd")) }(), "flags 0x1 not allowed on CALLBACK"},
		{"raw flag on callback error", func() []byte { h := NewHeader(CallbackError, FlagRaw, 1, 2); return frameBytes(h, []byte("{}")) }(), "flags 0x1 not allowed on CALLBACK_ERROR"},
		{"unknown chunk flag", func() []byte { h := NewHeader(Chunk, 2, 1, 0); return frameBytes(h, nil) }(), "flags 0x2 not allowed on CHUNK"},
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
	f.Add([]byte{0, 0, 0, 0, 2, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(frameBytes(NewHeader(Chunk, FlagRaw, 3, 2), []byte{1, 2}))
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

// TestVersion2Types: every version-2 type parses with the flags it may
// carry, and has a name.
func TestVersion2Types(t *testing.T) {
	cases := []struct {
		typ   Type
		flags uint16
		name  string
	}{
		{Chunk, 0, "CHUNK"}, {Chunk, FlagRaw, "CHUNK"}, {Credit, 0, "CREDIT"}, {Callback, 0, "CALLBACK"},
		{CallbackResult, 0, "CALLBACK_RESULT"}, {CallbackResult, FlagRaw, "CALLBACK_RESULT"},
		{CallbackError, 0, "CALLBACK_ERROR"}, {Result, FlagRaw, "RESULT"},
	}
	for _, c := range cases {
		in := frameBytes(NewHeader(c.typ, c.flags, 9, 3), []byte("abc"))
		h, body, err := ReadFrame(bytes.NewReader(in), make([]byte, HeaderSize), 1024)
		if err != nil || h.Type != c.typ || h.Flags != c.flags || h.Version != 2 || string(body) != "abc" {
			t.Fatalf("%s flags %d: got %+v %q %v", c.name, c.flags, h, body, err)
		}
		if c.typ.String() != c.name {
			t.Fatalf("type %d is named %q, want %q", c.typ, c.typ.String(), c.name)
		}
	}
}

func TestCredit(t *testing.T) {
	for _, n := range []uint32{1, 2, 1 << 31} {
		if got, err := ParseCredit(CreditBody(n)); err != nil || got != n {
			t.Fatalf("credit %d: got %d %v", n, got, err)
		}
	}
	for _, bad := range [][]byte{nil, {0, 0, 1}, {0, 0, 0, 0}, {0, 0, 0, 1, 0}} {
		if _, err := ParseCredit(bad); !errors.Is(err, ErrBadFrame) {
			t.Fatalf("credit body %v: got %v, want a bad frame", bad, err)
		}
	}
}

func TestExecuteBodyWithSessionAndStream(t *testing.T) {
	parts, size := ExecuteBodyWith("r", "count", 5, []byte(`{"n":3}`), map[string][]byte{"b": {1}},
		ExecuteOptions{Session: `s"1`, Stream: 8})
	all := bytes.Join(parts, nil)
	if size != len(all) {
		t.Fatalf("size %d, parts hold %d", size, len(all))
	}
	n := binary.BigEndian.Uint32(all[:4])
	var meta struct {
		Session string         `json:"session"`
		Stream  int            `json:"stream"`
		Args    map[string]int `json:"args"`
		Bin     [][]any        `json:"bin"`
	}
	if err := json.Unmarshal(all[4:4+n], &meta); err != nil {
		t.Fatalf("meta %q: %v", all[4:4+n], err)
	}
	if meta.Session != `s"1` || meta.Stream != 8 || meta.Args["n"] != 3 || len(meta.Bin) != 1 || !bytes.Equal(all[4+n:], []byte{1}) {
		t.Fatalf("meta = %+v, rest %v", meta, all[4+n:])
	}
	// Without options the meta is exactly version 1's.
	plain, _ := ExecuteBody("r", "t", 0, nil, nil)
	with, _ := ExecuteBodyWith("r", "t", 0, nil, nil, ExecuteOptions{})
	if !bytes.Equal(plain[0], with[0]) || bytes.Contains(plain[0], []byte("session")) || bytes.Contains(plain[0], []byte("stream")) {
		t.Fatalf("meta without options: %q / %q", plain[0][4:], with[0][4:])
	}
}

func TestCallbackBodyRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{0xab}, 1<<20)
	parts, size := CallbackBody("lookup", "req-1", []byte(` {"k": [1, 2]} `), map[string][]byte{"data": big, "a": {1, 2}, "empty": {}})
	body := bytes.Join(parts, nil)
	if size != len(body) {
		t.Fatalf("size %d, parts hold %d", size, len(body))
	}
	cb, err := ParseCallback(body)
	if err != nil {
		t.Fatal(err)
	}
	if cb.Name != "lookup" || cb.Parent != "req-1" || string(cb.Args) != `{"k": [1, 2]}` || len(cb.Binary) != 3 ||
		!bytes.Equal(cb.Binary["data"], big) || !bytes.Equal(cb.Binary["a"], []byte{1, 2}) || len(cb.Binary["empty"]) != 0 {
		t.Fatalf("parsed %q %q %q, %d binaries", cb.Name, cb.Parent, cb.Args, len(cb.Binary))
	}
	cb, err = ParseCallback(bytes.Join(first(CallbackBody("f", "", nil, nil)), nil))
	if err != nil || string(cb.Args) != "{}" || cb.Binary != nil || cb.Parent != "" {
		t.Fatalf("no arguments: %+v %v", cb, err)
	}
}

func first(parts [][]byte, _ int) [][]byte { return parts }

func callbackBodyFromMeta(meta string, bins ...[]byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(meta)))
	b = append(b, meta...)
	for _, x := range bins {
		b = append(b, x...)
	}
	return b
}

func TestParseCallbackRejects(t *testing.T) {
	frame := []struct {
		name string
		body []byte
	}{
		{"empty", nil},
		{"short", []byte{0, 0}},
		{"meta length past the end", []byte{0, 0, 1, 0, '{', '}'}},
		{"meta not json", callbackBodyFromMeta(`{"name":`)},
		{"meta null", callbackBodyFromMeta(`null`)},
		{"meta a list", callbackBodyFromMeta(`["f"]`)},
		{"name a number", callbackBodyFromMeta(`{"name":5}`)},
		{"parent a number", callbackBodyFromMeta(`{"name":"f","parent":7}`)},
		{"bin not a list", callbackBodyFromMeta(`{"name":"f","bin":{}}`)},
		{"bin entry short", callbackBodyFromMeta(`{"name":"f","bin":[["a"]]}`, []byte{1})},
		{"bin length negative", callbackBodyFromMeta(`{"name":"f","bin":[["a",-1]]}`)},
		{"bin length a float", callbackBodyFromMeta(`{"name":"f","bin":[["a",1.5]]}`, []byte{1, 2})},
		{"bin name twice", callbackBodyFromMeta(`{"name":"f","bin":[["a",1],["a",1]]}`, []byte{1}, []byte{2})},
		{"bin past the end", callbackBodyFromMeta(`{"name":"f","bin":[["a",3]]}`, []byte{1})},
		{"bytes left over", callbackBodyFromMeta(`{"name":"f","bin":[["a",1]]}`, []byte{1, 2})},
		{"bytes without bin", callbackBodyFromMeta(`{"name":"f"}`, []byte{1})},
	}
	for _, c := range frame {
		if _, err := ParseCallback(c.body); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: got %v, want a bad frame", c.name, err)
		}
	}
	args := []struct {
		name string
		body []byte
	}{
		{"args a list", callbackBodyFromMeta(`{"name":"f","args":[1]}`)},
		{"args a string", callbackBodyFromMeta(`{"name":"f","args":"x"}`)},
		{"name in args and bin", callbackBodyFromMeta(`{"name":"f","args":{"a":1},"bin":[["a",1]]}`, []byte{1})},
	}
	for _, c := range args {
		var ae *ArgumentError
		if _, err := ParseCallback(c.body); !errors.As(err, &ae) || errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: got %v, want an *ArgumentError", c.name, err)
		}
	}
}

func TestCallbackErrorBody(t *testing.T) {
	var e struct{ Kind, Message string }
	if err := json.Unmarshal(CallbackErrorBody("TOO_LARGE", `say "why"`), &e); err != nil || e.Kind != "TOO_LARGE" || e.Message != `say "why"` {
		t.Fatalf("got %+v %v", e, err)
	}
}

// FuzzParseCallback: no body makes ParseCallback panic, and the binaries of
// a body it accepts lie inside it.
func FuzzParseCallback(f *testing.F) {
	f.Add(bytes.Join(first(CallbackBody("f", "r", []byte(`{"x":1}`), map[string][]byte{"b": {1, 2}})), nil))
	f.Add(callbackBodyFromMeta(`{"name":"f","bin":[["a",1]]}`, []byte{1}))
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Fuzz(func(t *testing.T, in []byte) {
		cb, err := ParseCallback(in)
		if err != nil {
			return
		}
		total := 0
		for _, b := range cb.Binary {
			total += len(b)
		}
		if total > len(in) {
			t.Fatalf("binaries of %d bytes from a %d-byte body", total, len(in))
		}
	})
}
