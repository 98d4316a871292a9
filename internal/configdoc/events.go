package configdoc

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
)

// Markers of the generated event catalogue in docs/telemetry.md.
const (
	EventsBegin = "<!-- event-catalogue:begin (go generate; do not edit) -->"
	EventsEnd   = "<!-- event-catalogue:end -->"
)

// Event is one event type found in the source.
type Event struct {
	Name   string // what EventName returns
	Type   string
	Doc    string
	Fields []EventField
}

// EventField is one field of an event.
type EventField struct{ Name, Type, Doc string }

// Events reads the event types of the Go file at path: every struct with an
// EventName method returning a string literal, in the file's order. A
// struct without one, or a method on no struct, is an error.
func Events(path string) ([]Event, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	names, err := eventNames(f)
	if err != nil {
		return nil, err
	}
	var out []Event
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.TYPE {
			continue
		}
		for _, spec := range gd.Specs {
			ts := spec.(*ast.TypeSpec)
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				continue
			}
			name, ok := names[ts.Name.Name]
			if !ok {
				return nil, fmt.Errorf("configdoc: struct %s in %s has no EventName method", ts.Name.Name, path)
			}
			delete(names, ts.Name.Name)
			out = append(out, Event{Name: name, Type: ts.Name.Name, Doc: oneLine(gd.Doc.Text()), Fields: eventFields(st)})
		}
	}
	for typ := range names {
		return nil, fmt.Errorf("configdoc: EventName on %s, which is no struct of %s", typ, path)
	}
	return out, nil
}

// eventNames maps receiver type to the literal its EventName returns.
func eventNames(f *ast.File) (map[string]string, error) {
	names := map[string]string{}
	for _, decl := range f.Decls {
		fd, ok := decl.(*ast.FuncDecl)
		if !ok || fd.Name.Name != "EventName" || fd.Recv == nil || len(fd.Body.List) != 1 {
			continue
		}
		ret, ok := fd.Body.List[0].(*ast.ReturnStmt)
		if !ok || len(ret.Results) != 1 {
			continue
		}
		lit, ok := ret.Results[0].(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return nil, fmt.Errorf("configdoc: EventName of %s must return a string literal", typeString(fd.Recv.List[0].Type))
		}
		v, _ := strconv.Unquote(lit.Value)
		names[strings.TrimPrefix(typeString(fd.Recv.List[0].Type), "*")] = v
	}
	return names, nil
}

// commonFields explains the fields many events share, when the field has
// no comment of its own.
var commonFields = map[string]string{
	"Time":    "when it happened",
	"Pool":    "the pool's name (PoolConfig.Name)",
	"Worker":  "the worker's id, `<pool>-<n>` (never reused within a pool)",
	"Tool":    "the tool called",
	"Pid":     "the worker's Python process id",
	"Session": "the session's id (Session.ID; Python's snakepit.current_session().id)",
}

func eventFields(st *ast.StructType) []EventField {
	var out []EventField
	for _, field := range st.Fields.List {
		doc := field.Doc.Text()
		if doc == "" {
			doc = field.Comment.Text()
		}
		for _, id := range field.Names {
			d := oneLine(doc)
			if d == "" {
				d = commonFields[id.Name]
			}
			out = append(out, EventField{Name: id.Name, Type: typeString(field.Type), Doc: d})
		}
	}
	return out
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Catalogue renders events as Markdown: a summary table, then each event's
// fields.
func Catalogue(events []Event) string {
	var b strings.Builder
	b.WriteString("\n| event | Go type | when |\n|---|---|---|\n")
	for _, e := range events {
		fmt.Fprintf(&b, "| `%s` | `telemetry.%s` | %s |\n", e.Name, e.Type, cell(strings.TrimPrefix(e.Doc, e.Type+": ")))
	}
	for _, e := range events {
		fmt.Fprintf(&b, "\n### `%s`\n\n`telemetry.%s`: %s\n\n| field | type | meaning |\n|---|---|---|\n",
			e.Name, e.Type, strings.TrimPrefix(e.Doc, e.Type+": "))
		for _, f := range e.Fields {
			fmt.Fprintf(&b, "| `%s` | `%s` | %s |\n", f.Name, f.Type, cell(f.Doc))
		}
	}
	return b.String()
}
