// Package configdoc renders reference documentation from the code, so it
// cannot drift: the configuration reference (the README's config tables,
// from the config structs' doc comments) and the telemetry event catalogue
// (docs/telemetry.md, from telemetry/events.go). Run `go generate` in the
// repository root to update both; tests fail when they are out of date.
package configdoc

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"regexp"
	"strings"
)

// Begin and End mark the generated part of a Markdown file.
const (
	Begin = "<!-- config-table:begin (go generate; do not edit) -->"
	End   = "<!-- config-table:end -->"
)

var defaultRe = regexp.MustCompile(`(?s)Default(?::| is)?\s+(.*?)(?:\.\s|\.$|$)`)

// Table renders one Markdown table per struct named in types, read from the
// Go source file at path.
func Table(path string, types ...string) (string, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, name := range types {
		st := findStruct(f, name)
		if st == nil {
			return "", fmt.Errorf("configdoc: no struct %s in %s", name, path)
		}
		fmt.Fprintf(&b, "\n**%s**\n\n| field | type | default | meaning |\n|---|---|---|---|\n", name)
		for _, field := range st.Fields.List {
			for _, id := range field.Names {
				if !id.IsExported() {
					continue
				}
				def, doc := splitDefault(field.Doc.Text())
				fmt.Fprintf(&b, "| `%s` | `%s` | %s | %s |\n", id.Name, typeString(field.Type), cell(def), cell(doc))
			}
		}
	}
	return b.String(), nil
}

// Source is one Go file and the structs of it the reference shows; Titles
// renames them (e.g. supervision.Policy is PoolConfig's RestartPolicy).
type Source struct {
	Path   string
	Types  []string
	Titles map[string]string
}

// Sources are the structs of the configuration reference, relative to the
// repository root.
var Sources = []Source{
	{Path: "config.go", Types: []string{"Config", "PoolConfig"}},
	{Path: "supervision/policy.go", Types: []string{"Policy"}, Titles: map[string]string{"Policy": "RestartPolicy"}},
	{Path: "supervision/recycle.go", Types: []string{"RecyclePolicy"}},
	{Path: "supervision/watchdog.go", Types: []string{"WatchdogPolicy"}},
	{Path: "actors/settings.go", Types: []string{"SessionPolicy"}},
}

// Reference renders every table of Sources, reading the files under root.
func Reference(root string) (string, error) {
	var b strings.Builder
	for _, src := range Sources {
		t, err := Table(root+"/"+src.Path, src.Types...)
		if err != nil {
			return "", err
		}
		for from, to := range src.Titles {
			t = strings.Replace(t, "**"+from+"**", "**"+to+"**", 1)
		}
		b.WriteString(t)
	}
	return b.String(), nil
}

// Splice replaces the text between Begin and End in doc with table.
func Splice(doc, table string) (string, error) { return SpliceBetween(doc, Begin, End, table) }

// SpliceBetween replaces the text between the markers begin and end in doc.
func SpliceBetween(doc, begin, end, text string) (string, error) {
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		return "", fmt.Errorf("configdoc: markers %q and %q not found", begin, end)
	}
	return doc[:i+len(begin)] + "\n" + text + "\n" + doc[j:], nil
}

func findStruct(f *ast.File, name string) *ast.StructType {
	var found *ast.StructType
	ast.Inspect(f, func(n ast.Node) bool {
		if ts, ok := n.(*ast.TypeSpec); ok && ts.Name.Name == name {
			found, _ = ts.Type.(*ast.StructType)
		}
		return found == nil
	})
	return found
}

func splitDefault(doc string) (def, rest string) {
	doc = strings.Join(strings.Fields(doc), " ")
	loc := defaultRe.FindStringSubmatchIndex(doc)
	if loc == nil {
		return "—", doc
	}
	def = doc[loc[2]:loc[3]]
	rest = strings.TrimSpace(doc[:loc[0]] + doc[loc[1]:])
	return def, rest
}

func typeString(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.Ident:
		return t.Name
	case *ast.SelectorExpr:
		return typeString(t.X) + "." + t.Sel.Name
	case *ast.ArrayType:
		return "[]" + typeString(t.Elt)
	case *ast.MapType:
		return "map[" + typeString(t.Key) + "]" + typeString(t.Value)
	case *ast.StarExpr:
		return "*" + typeString(t.X)
	case *ast.FuncType:
		var params []string
		for _, f := range t.Params.List {
			params = append(params, typeString(f.Type))
		}
		return "func(" + strings.Join(params, ", ") + ")"
	}
	return fmt.Sprintf("%T", e)
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
