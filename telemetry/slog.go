// Package telemetry owns how the runtime reports what it does: logging
// through one hclog.Logger today, the typed event stream and metrics later.
// It must not import the actors or the root package.
package telemetry

import (
	"context"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// SlogToHclog returns a slog.Logger whose records go to l, each one level
// lower than slog says (protoactor-go logs routine events at Info; they are
// Debug for a user of this runtime).
func SlogToHclog(l hclog.Logger) *slog.Logger {
	return slog.New(&hclogHandler{log: l})
}

type hclogHandler struct {
	log   hclog.Logger
	attrs []any
}

func demote(level slog.Level) hclog.Level {
	switch {
	case level >= slog.LevelError:
		return hclog.Warn
	case level >= slog.LevelWarn:
		return hclog.Info
	case level >= slog.LevelInfo:
		return hclog.Debug
	default:
		return hclog.Trace
	}
}

func (h *hclogHandler) Enabled(_ context.Context, level slog.Level) bool {
	return h.log.GetLevel() <= demote(level)
}

func (h *hclogHandler) Handle(_ context.Context, r slog.Record) error {
	args := append([]any(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		args = append(args, a.Key, a.Value.Any())
		return true
	})
	h.log.Log(demote(r.Level), r.Message, args...)
	return nil
}

func (h *hclogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &hclogHandler{log: h.log, attrs: append([]any(nil), h.attrs...)}
	for _, a := range attrs {
		n.attrs = append(n.attrs, a.Key, a.Value.Any())
	}
	return n
}

func (h *hclogHandler) WithGroup(name string) slog.Handler {
	return &hclogHandler{log: h.log.Named(name), attrs: h.attrs}
}
