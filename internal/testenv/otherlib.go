package testenv

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/native"
)

// otherVersion is a real llama.cpp that kvtrim does not support (b8179,
// from node-llama-cpp 3.17.1, older than every supported release), for
// testing that kvtrim refuses it. Only the three libraries kvtrim opens
// are installed; it is never used to run a model.
const otherVersion = `# package: @node-llama-cpp/linux-x64@3.17.1
# version: b8179
524f8ec8134907a02d836cb6aa273c79585ab268bad2801044d5bfb0219e37ed  package/bins/linux-x64/libggml-base.so
94997ccc4715588a0bc1a2d5fb054fb4b0fcd5c89346ed7857d6e086739ef795  package/bins/linux-x64/libggml.b8179.so
2d228f9813d12b6e4ad5606b6dbf9e0083c6094052593a800fed7884f9d2c661  package/bins/linux-x64/libllama.b8179.so
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
	if _, err := os.Stat(filepath.Join(dir, "libllama.b8179.so")); err == nil {
		return dir
	}
	if _, err := native.Fetch(context.Background(), m, dir, func(string) {}); err != nil {
		t.Fatalf("fetch a llama.cpp of another version: %v", err)
	}
	return dir
}
