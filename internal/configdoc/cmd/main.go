// Command configdoc rewrites the generated parts of the documentation: the
// configuration reference in README.md (configdoc.Sources) and the event
// and metrics catalogues in docs/telemetry.md (telemetry/events.go,
// telemetry.Metrics).
package main

import (
	"fmt"
	"os"

	"github.com/snakepit-go/snakepit/internal/configdoc"
)

func main() {
	if err := run("."); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(root string) error {
	table, err := configdoc.Reference(root)
	if err != nil {
		return err
	}
	if err := splice(root+"/README.md", configdoc.Begin, configdoc.End, table); err != nil {
		return err
	}
	events, err := configdoc.Events(root + "/telemetry/events.go")
	if err != nil {
		return err
	}
	if err := splice(root+"/docs/telemetry.md", configdoc.EventsBegin, configdoc.EventsEnd, configdoc.Catalogue(events)); err != nil {
		return err
	}
	metrics, err := configdoc.MetricsTable()
	if err != nil {
		return err
	}
	return splice(root+"/docs/telemetry.md", configdoc.MetricsBegin, configdoc.MetricsEnd, metrics)
}

func splice(path, begin, end, text string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := configdoc.SpliceBetween(string(old), begin, end, text)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, []byte(out), 0o644)
}
