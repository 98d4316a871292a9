package pyworker

import (
	"embed"
	"io/fs"
	"os"
	"path/filepath"
)

// The Python package ships inside the Go binary, so a worker always runs the
// code of the same version as the runtime that started it.
//
//go:embed python/snakepit/*.py python/snakepit/v1/*.py
var pythonPackage embed.FS

// InstallPackage writes the embedded snakepit Python package under dir and
// returns the directory to put on PYTHONPATH.
func InstallPackage(dir string) (string, error) {
	root := filepath.Join(dir, "py")
	err := fs.WalkDir(pythonPackage, "python", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("python", path)
		target := filepath.Join(root, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		data, err := pythonPackage.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o600)
	})
	return root, err
}
