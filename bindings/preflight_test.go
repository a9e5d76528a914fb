package bindings

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMissingLibraries: a real shared object's needed libraries are found
// where they are (libc and friends, by the loader; those beside it through
// its $ORIGIN RUNPATH), and one the resolver says is nowhere is named.
func TestMissingLibraries(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, "libggml-fake.so")
	src := testLibrary(t)
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lib, b, 0o644); err != nil {
		t.Fatal(err)
	}
	missing, err := missingLibraries(lib, dlopenable)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != 0 {
		t.Errorf("%s: missing %v, want none", src, missing)
	}
	missing, err = missingLibraries(lib, func(name string) bool { return !strings.HasPrefix(name, "libc.") })
	if err != nil || len(missing) != 1 || missing[0] != "libc.so.6" {
		t.Errorf("with libc.so.6 nowhere: missing %v (%v)", missing, err)
	}
	if err := Preflight(dir); err != nil {
		t.Errorf("a folder whose backend finds its libraries: %v", err)
	}
}

// testLibrary is a shared object every Linux with a C++ toolchain's
// runtime has: libstdc++, which needs libc.so.6 among others.
func testLibrary(t *testing.T) string {
	t.Helper()
	for _, d := range []string{"/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib"} {
		if p := filepath.Join(d, "libstdc++.so.6"); fileExists(p) {
			return p
		}
	}
	t.Skip("no libstdc++.so.6 in the usual folders")
	return ""
}
