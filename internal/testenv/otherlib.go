package testenv

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/native"
)

// otherVersion is a real llama.cpp of another version (b8390, from
// node-llama-cpp 3.18.1), for testing that kvtrim refuses it. Only the three
// libraries kvtrim opens are installed; it is never used to run a model.
const otherVersion = `# package: @node-llama-cpp/linux-x64@3.18.1
# version: b8390
bcf5a1c9aa7eefb84368a931557a8efa0076b514b63049ceafe1e9cb87e7e811  package/bins/linux-x64/libggml-base.so
b0d1dd66b8aa4a3a1f3e877d8754b82c8972c9aad9ec1dd5ed0c9f124f80f02f  package/bins/linux-x64/libggml.b8390.so
f1edd54269c9826c7054cc23da15cd31e763f346b6b36f0a0307bbe012ab8a74  package/bins/linux-x64/libllama.b8390.so
`

// OtherVersionLib returns the folder of a libllama of an unsupported
// version: KVTRIM_TEST_OTHER_LIB, or one fetched with npm into kvtrim's
// cache on first use.
func OtherVersionLib(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("KVTRIM_TEST_OTHER_LIB"); d != "" {
		return d
	}
	m, err := native.ParseManifest([]byte(otherVersion))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(filepath.Dir(bindings.CacheDir(bindings.OSEnv())), "test-"+m.Version)
	if _, err := os.Stat(filepath.Join(dir, "libllama.b8390.so")); err == nil {
		return dir
	}
	if _, err := native.Fetch(context.Background(), m, dir, func(string) {}); err != nil {
		t.Fatalf("fetch a llama.cpp of another version: %v", err)
	}
	return dir
}
