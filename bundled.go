package kvtrim

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
)

// The model 'kvtrim demo' runs without arguments: stories260K (MIT, see
// testdata/stories260K.LICENSE). It is linked into a binary only if
// BundledModel is called.
//
//go:embed testdata/stories260K.gguf
var bundledModel []byte

// BundledModelName is the file name of the bundled model.
const BundledModelName = "stories260K.gguf"

// BundledModel writes the bundled tiny model into dir (once; an existing
// identical copy is reused) and returns its path, since llama.cpp loads
// models from files.
func BundledModel(dir string) (string, error) {
	path := filepath.Join(dir, BundledModelName)
	want := sha256.Sum256(bundledModel)
	if old, err := os.ReadFile(path); err == nil && sha256.Sum256(old) == want {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("bundled model: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".model-*")
	if err != nil {
		return "", fmt.Errorf("bundled model: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.ReadFrom(bytes.NewReader(bundledModel)); err != nil {
		tmp.Close()
		return "", fmt.Errorf("bundled model: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("bundled model: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("bundled model: %w", err)
	}
	return path, nil
}
