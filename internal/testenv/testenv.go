// Package testenv gives kvtrim's tests the real llama.cpp and real models:
// the libllama kvtrim would use (fetched into kvtrim's cache on first use
// when none is installed, as 'kvtrim demo' does) and the GGUF files of
// testdata/ and ../shared/models.
package testenv

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

var (
	once   sync.Once
	lib    *bindings.Library
	libErr error
)

// Library returns the loaded libllama, fetching it if none is installed.
// A test that needs it fails (never skips) when it cannot be had.
func Library(t testing.TB) *bindings.Library {
	t.Helper()
	once.Do(func() {
		lib, libErr = kvtrim.OpenLibrary(context.Background(), kvtrim.LibraryOptions{Fetch: true, Log: Logger()})
	})
	if libErr != nil {
		t.Fatalf("libllama: %v", libErr)
	}
	return lib
}

// Logger writes llama.cpp's log to stderr when KVTRIM_TEST_LOG is set.
func Logger() zerolog.Logger {
	if os.Getenv("KVTRIM_TEST_LOG") == "" {
		return zerolog.Nop()
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(zerolog.TraceLevel)
}

// RepoRoot is the kvtrim checkout this package lives in.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// SharedModels is the folder of the shared test models: KVTRIM_MODELS_DIR,
// or ../shared/models beside the checkout.
func SharedModels() string {
	if d := os.Getenv("KVTRIM_MODELS_DIR"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(), "..", "shared", "models")
}

// ModelPath finds a model by file name in testdata/ or the shared models,
// failing the test if it is in neither.
func ModelPath(t testing.TB, name string) string {
	t.Helper()
	for _, dir := range []string{filepath.Join(RepoRoot(), "testdata"), SharedModels()} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("model %s is in neither testdata/ nor %s (set KVTRIM_MODELS_DIR)", name, SharedModels())
	return ""
}

// LlamaSource is the pinned llama.cpp source (native/llama-source.sh
// fetches it): KVTRIM_LLAMA_SRC, or where .ci/run puts it. A test that
// reads it is skipped without it, saying how to get it; .ci/run always
// fetches it first.
func LlamaSource(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("KVTRIM_LLAMA_SRC")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Skipf("no llama.cpp source: %v (set KVTRIM_LLAMA_SRC)", err)
		}
		dir = filepath.Join(cache, "kvtrim", "llama-source", "llama.cpp")
	}
	if _, err := os.Stat(filepath.Join(dir, "include", "llama.h")); err != nil {
		t.Skipf("no llama.cpp source at %s: run native/llama-source.sh %s, or set KVTRIM_LLAMA_SRC", dir, filepath.Dir(dir))
	}
	return dir
}
