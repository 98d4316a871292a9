// Command configdoc rewrites the configuration reference of README.md from the
// doc comments of the config structs (configdoc.Sources).
package main

import (
	"fmt"
	"os"

	"github.com/snakepit-go/snakepit/internal/configdoc"
)

func main() {
	if err := run(".", "README.md"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(root, doc string) error {
	table, err := configdoc.Reference(root)
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
