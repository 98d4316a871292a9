package snakepit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync"

	wpb "github.com/snakepit-go/snakepit/pyworker/pb"
)

// Register exposes a Go function to Python tools, which call it with
// snakepit.call(name, **kwargs) (sync tools) or await snakepit.acall(name,
// **kwargs) (async tools), on the connection their call came in on:
//
//	rt.Register("lookup", func(ctx context.Context, args struct{ Key string }) (map[string]any, error) {
//		return db.Get(ctx, args.Key)
//	})
//
// handler must be a func(context.Context, T) (R, error). The keyword
// arguments arrive as one JSON object decoded into T (a struct, a map, ...);
// bytes travel raw: into a map[string]any as []byte values, into a []byte
// struct field as they are. R is returned to Python as a tool result is
// (JSON; a []byte result arrives as bytes). Each call runs on a goroutine of
// its own, with a context derived from the calling tool's call: its
// deadline and cancellation reach the handler. An error returned arrives in
// Python as snakepit.CallbackError (kind "HANDLER_ERROR", the error's text);
// a panic as kind "HANDLER_PANIC" (the program goes on).
//
// pools lists the pools whose tools may call it; none: every pool. A name
// not exposed to the calling pool fails in Python with kind
// "UNKNOWN_CALLBACK", listing those that are. Register may be called at any
// time while the Runtime runs; registering a name twice is an error.
func (rt *Runtime) Register(name string, handler any, pools ...string) error {
	h, err := newHandler(name, handler)
	if err != nil {
		return err
	}
	for _, p := range pools {
		if _, ok := rt.pools[p]; !ok {
			return fmt.Errorf("snakepit: register %q: pool %q: %w; configured pools: %s", name, p, ErrUnknownPool, strings.Join(rt.names, ", "))
		}
	}
	h.pools = slices.Clone(pools)
	return rt.callbacks.add(h)
}

var (
	ctxType = reflect.TypeFor[context.Context]()
	errType = reflect.TypeFor[error]()
)

// handler is one registered callback.
type handler struct {
	name  string
	fn    reflect.Value
	arg   reflect.Type
	pools []string // empty: every pool
}

func newHandler(name string, fn any) (*handler, error) {
	if name == "" || strings.TrimSpace(name) != name {
		return nil, fmt.Errorf("snakepit: register %q: %w: the name must be non-empty, without surrounding spaces", name, ErrBadCallback)
	}
	if fn == nil {
		return nil, fmt.Errorf("snakepit: register %q: %w: the handler is nil; pass a func(context.Context, T) (R, error)", name, ErrBadCallback)
	}
	v := reflect.ValueOf(fn)
	t := v.Type()
	if t.Kind() != reflect.Func || t.NumIn() != 2 || t.In(0) != ctxType || t.NumOut() != 2 || t.Out(1) != errType || t.IsVariadic() {
		return nil, fmt.Errorf("snakepit: register %q: %w: the handler must be a func(context.Context, T) (R, error), not %s",
			name, ErrBadCallback, kindOf(fn))
	}
	if v.IsNil() {
		return nil, fmt.Errorf("snakepit: register %q: %w: the handler is a nil func", name, ErrBadCallback)
	}
	return &handler{name: name, fn: v, arg: t.In(1)}, nil
}

func (h *handler) exposedTo(pool string) bool {
	return len(h.pools) == 0 || slices.Contains(h.pools, pool)
}

// callbackRegistry holds the registered callbacks.
type callbackRegistry struct {
	mu       sync.RWMutex
	handlers map[string]*handler
}

func (r *callbackRegistry) add(h *handler) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.handlers[h.name]; dup {
		return fmt.Errorf("snakepit: register %q: %w: that name is registered already", h.name, ErrBadCallback)
	}
	if r.handlers == nil {
		r.handlers = map[string]*handler{}
	}
	r.handlers[h.name] = h
	return nil
}

// lookup returns the handler name exposed to pool, or the names that are.
func (r *callbackRegistry) lookup(name, pool string) (*handler, []string) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if h := r.handlers[name]; h != nil && h.exposedTo(pool) {
		return h, nil
	}
	var exposed []string
	for n, h := range r.handlers {
		if h.exposedTo(pool) {
			exposed = append(exposed, n)
		}
	}
	slices.Sort(exposed)
	return nil, exposed
}

// serve answers the callbacks of pool's workers.
func (r *callbackRegistry) serve(pool string, maxBytes int) func(context.Context, string, *wpb.CallbackRequest) *wpb.CallbackReply {
	return func(ctx context.Context, _ string, req *wpb.CallbackRequest) *wpb.CallbackReply {
		fail := func(kind, format string, a ...any) *wpb.CallbackReply {
			return &wpb.CallbackReply{Outcome: &wpb.CallbackReply_Error{Error: &wpb.CallbackError{Kind: kind, Message: fmt.Sprintf(format, a...)}}}
		}
		h, exposed := r.lookup(req.GetName(), pool)
		if h == nil {
			list := "none (register one with Runtime.Register)"
			if len(exposed) > 0 {
				list = strings.Join(exposed, ", ")
			}
			return fail("UNKNOWN_CALLBACK", "no callback %q is exposed to pool %q; exposed: %s", req.GetName(), pool, list)
		}
		if err := ctx.Err(); err != nil {
			return fail(ctxKind(err), "callback %q not run: the calling tool's call ended (%v)", h.name, err)
		}
		arg, err := decodeCallbackArgs(h.arg, req.GetArgsJson(), req.GetBinaryArgs())
		if err != nil {
			return fail("BAD_ARGUMENTS", "callback %q: arguments do not fit %s: %v", h.name, h.arg, err)
		}
		out, err := h.call(ctx, arg)
		switch {
		case errors.As(err, new(*handlerPanic)):
			return fail("HANDLER_PANIC", "callback %q: %v", h.name, err)
		case errors.Is(err, ErrDeadlock):
			return fail("DEADLOCK", "callback %q: %v", h.name, err)
		case err != nil && ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
			return fail(ctxKind(ctx.Err()), "callback %q: %v", h.name, err)
		case err != nil:
			return fail("HANDLER_ERROR", "%v", err)
		}
		if b, ok := out.([]byte); ok {
			if len(b) > maxBytes {
				return fail("TOO_LARGE", "callback %q returned %d bytes, more than Config.MaxMessageBytes (%d)", h.name, len(b), maxBytes)
			}
			return &wpb.CallbackReply{Outcome: &wpb.CallbackReply_ResultRaw{ResultRaw: b}}
		}
		data, err := json.Marshal(out)
		if err != nil {
			return fail("UNENCODABLE_RESULT", "callback %q returned a %s JSON cannot encode: %v", h.name, kindOf(out), err)
		}
		if len(data) > maxBytes {
			return fail("TOO_LARGE", "callback %q returned %d bytes of JSON, more than Config.MaxMessageBytes (%d)", h.name, len(data), maxBytes)
		}
		return &wpb.CallbackReply{Outcome: &wpb.CallbackReply_ResultJson{ResultJson: data}}
	}
}

func ctxKind(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "DEADLINE_EXCEEDED"
	}
	return "CANCELLED"
}

// handlerPanic is a panic in a handler, recovered.
type handlerPanic struct {
	value any
	stack []byte
}

func (p *handlerPanic) Error() string {
	return fmt.Sprintf("the handler panicked: %v\n%s", p.value, p.stack)
}

// call runs the handler, turning a panic into an error.
func (h *handler) call(ctx context.Context, arg reflect.Value) (out any, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &handlerPanic{value: v, stack: debug.Stack()}
		}
	}()
	res := h.fn.Call([]reflect.Value{reflect.ValueOf(ctx), arg})
	if e := res[1].Interface(); e != nil {
		return nil, e.(error)
	}
	return res[0].Interface(), nil
}

// decodeCallbackArgs builds the handler's argument from the JSON object and
// the raw bytes values.
func decodeCallbackArgs(t reflect.Type, argsJSON []byte, binary map[string][]byte) (reflect.Value, error) {
	ptr := reflect.New(t)
	if t.Kind() == reflect.Map && t.Key().Kind() == reflect.String && t.Elem().Kind() == reflect.Interface && t.Elem().NumMethod() == 0 {
		m := map[string]any{}
		if len(argsJSON) > 0 {
			if err := json.Unmarshal(argsJSON, &m); err != nil {
				return reflect.Value{}, err
			}
		}
		for k, v := range binary {
			m[k] = v
		}
		mv := reflect.MakeMapWithSize(t, len(m))
		for k, v := range m {
			var ev reflect.Value
			if v == nil {
				ev = reflect.Zero(t.Elem())
			} else {
				ev = reflect.ValueOf(v)
			}
			mv.SetMapIndex(reflect.ValueOf(k).Convert(t.Key()), ev)
		}
		return mv, nil
	}
	if len(binary) == 0 {
		if len(argsJSON) > 0 {
			if err := json.Unmarshal(argsJSON, ptr.Interface()); err != nil {
				return reflect.Value{}, err
			}
		}
		return ptr.Elem(), nil
	}
	// Bytes values join the JSON object (base64, as encoding/json writes and
	// reads []byte) so that they land in []byte fields.
	m := map[string]json.RawMessage{}
	if len(argsJSON) > 0 {
		if err := json.Unmarshal(argsJSON, &m); err != nil {
			return reflect.Value{}, err
		}
	}
	for k, v := range binary {
		enc, _ := json.Marshal(v)
		m[k] = enc
	}
	merged, err := json.Marshal(m)
	if err != nil {
		return reflect.Value{}, err
	}
	if err := json.Unmarshal(merged, ptr.Interface()); err != nil {
		return reflect.Value{}, err
	}
	return ptr.Elem(), nil
}
