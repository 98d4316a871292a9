// Command configdoc rewrites the config table of README.md from config.go.
package main

import (
	"fmt"
	"os"

	"github.com/snakepit-go/snakepit/internal/configdoc"
)

func main() {
	if err := run("config.go", "README.md"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(src, doc string) error {
	table, err := configdoc.Table(src, "Config", "PoolConfig")
	if err != nil {
		return err
	}
	old, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	out, err := configdoc.Splice(string(old), table)
	if err != nil {
		return err
	}
	return os.WriteFile(doc, []byte(out), 0o644)
}
