package snakepit

import (
	"encoding/json"
	"fmt"
)

// Result is what a tool returned: JSON, or raw bytes when the tool returned
// bytes.
type Result struct {
	json   []byte
	raw    []byte
	isRaw  bool
	worker string
	// reboundFrom: a hint-mode session call that ran away from its worker.
	reboundFrom string
}

// Decode stores the result in v, as json.Unmarshal does. A bytes result
// decodes into *[]byte (or *string).
func (r *Result) Decode(v any) error {
	if r.isRaw {
		switch p := v.(type) {
		case *[]byte:
			*p = r.raw
			return nil
		case *string:
			*p = string(r.raw)
			return nil
		}
		return fmt.Errorf("snakepit: the tool returned bytes; decode into *[]byte, not %T", v)
	}
	if err := json.Unmarshal(r.json, v); err != nil {
		return fmt.Errorf("snakepit: decode result into %T: %w", v, err)
	}
	return nil
}

// JSON returns the result as JSON (nil when the tool returned bytes).
func (r *Result) JSON() []byte { return r.json }

// Bytes returns the raw result when the tool returned bytes.
func (r *Result) Bytes() ([]byte, bool) { return r.raw, r.isRaw }

// Worker is the id of the worker that ran the call, e.g. "default-2".
func (r *Result) Worker() string { return r.worker }

// ReboundFrom is, for a call of a hint-mode session that found its worker
// busy or gone and ran on another (which holds the session from then on),
// the worker the session was bound to; "" otherwise.
func (r *Result) ReboundFrom() string { return r.reboundFrom }
