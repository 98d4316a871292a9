// Package wire is the native frame format between the runtime and a Python
// worker (docs/wire-format.md): a 16-byte header, then the body. It only
// encodes, decodes and validates frames; it owns no connection.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// HeaderSize is the size of a frame header in bytes.
const HeaderSize = 16

// Version is the wire version this package speaks (2: streams, callbacks
// and sessions).
const Version = 2

// MetaAllowance is added to the message limit for a frame's metadata.
const MetaAllowance = 64 << 10

// Type is a frame type.
type Type uint8

// Frame types.
const (
	Hello         Type = 1
	HelloOK       Type = 2
	Execute       Type = 3
	Result        Type = 4
	Error         Type = 5
	Cancel        Type = 6
	Request       Type = 7
	Reply         Type = 8
	ProtocolError Type = 9
	// Version 2.
	Chunk          Type = 10 // one item a streaming call yielded
	Credit         Type = 11 // more CHUNKs may be sent on a stream
	Callback       Type = 12 // a tool called a function the runtime registered
	CallbackResult Type = 13 // the callback's result
	CallbackError  Type = 14 // the callback failed

	lastType = CallbackError
)

// FlagRaw marks a Result, Chunk or CallbackResult body as raw bytes rather
// than JSON.
const FlagRaw uint16 = 1

var typeNames = map[Type]string{Hello: "HELLO", HelloOK: "HELLO_OK", Execute: "EXECUTE", Result: "RESULT",
	Error: "ERROR", Cancel: "CANCEL", Request: "REQUEST", Reply: "REPLY", ProtocolError: "PROTOCOL_ERROR",
	Chunk: "CHUNK", Credit: "CREDIT", Callback: "CALLBACK", CallbackResult: "CALLBACK_RESULT",
	CallbackError: "CALLBACK_ERROR"}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type %d", uint8(t))
}

// allowedFlags lists the flag bits each type may carry.
func allowedFlags(t Type) uint16 {
	switch t {
	case Result, Chunk, CallbackResult:
		return FlagRaw
	}
	return 0
}

// Header is a frame header.
type Header struct {
	Length  uint32
	Version uint8
	Type    Type
	Flags   uint16
	Stream  uint64
}

// ErrBadFrame is matched (errors.Is) by every *FrameError.
var ErrBadFrame = errors.New("bad frame")

// FrameError says what is wrong with a frame.
type FrameError struct{ Problem string }

func (e *FrameError) Error() string        { return "bad frame: " + e.Problem }
func (e *FrameError) Is(target error) bool { return target == ErrBadFrame }

// VersionError means the peer speaks another wire version.
type VersionError struct{ Got uint8 }

func (e *VersionError) Error() string {
	return fmt.Sprintf("bad frame: wire version %d, this side speaks %d", e.Got, Version)
}
func (e *VersionError) Is(target error) bool { return target == ErrBadFrame }

// Put writes h into b[:HeaderSize].
func (h Header) Put(b []byte) {
	binary.BigEndian.PutUint32(b[0:4], h.Length)
	b[4] = h.Version
	b[5] = byte(h.Type)
	binary.BigEndian.PutUint16(b[6:8], h.Flags)
	binary.BigEndian.PutUint64(b[8:16], h.Stream)
}

// NewHeader returns the header of a frame of type t with a body of n bytes.
func NewHeader(t Type, flags uint16, stream uint64, n int) Header {
	return Header{Length: uint32(n), Version: Version, Type: t, Flags: flags, Stream: stream}
}

// ParseHeader decodes and validates a header; maxBody bounds its length.
func ParseHeader(b []byte, maxBody int) (Header, error) {
	h := Header{Length: binary.BigEndian.Uint32(b[0:4]), Version: b[4], Type: Type(b[5]),
		Flags: binary.BigEndian.Uint16(b[6:8]), Stream: binary.BigEndian.Uint64(b[8:16])}
	switch {
	case h.Version != Version:
		return h, &VersionError{Got: h.Version}
	case h.Type < Hello || h.Type > lastType:
		return h, &FrameError{Problem: fmt.Sprintf("unknown frame type %d", uint8(h.Type))}
	case h.Flags&^allowedFlags(h.Type) != 0:
		return h, &FrameError{Problem: fmt.Sprintf("flags %#x not allowed on %s", h.Flags, h.Type)}
	case int64(h.Length) > int64(maxBody):
		return h, &FrameError{Problem: fmt.Sprintf("%s frame of %d bytes exceeds the limit of %d", h.Type, h.Length, maxBody)}
	}
	return h, nil
}

// ReadFrame reads one frame; hdr is scratch space of HeaderSize bytes. A
// connection that ends inside a frame gives a *FrameError (truncated); one
// that ends between frames gives io.EOF.
func ReadFrame(r io.Reader, hdr []byte, maxBody int) (Header, []byte, error) {
	if _, err := io.ReadFull(r, hdr[:HeaderSize]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return Header{}, nil, &FrameError{Problem: "connection ended inside a frame header (truncated)"}
		}
		return Header{}, nil, err
	}
	h, err := ParseHeader(hdr, maxBody)
	if err != nil {
		return h, nil, err
	}
	body := make([]byte, h.Length)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return h, nil, &FrameError{Problem: fmt.Sprintf("connection ended inside a %d-byte %s body (truncated)", h.Length, h.Type)}
		}
		return h, nil, err
	}
	return h, body, nil
}
