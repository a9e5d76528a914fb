package native

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPinnedManifest(t *testing.T) {
	m, err := PinnedManifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Package != "@node-llama-cpp/linux-x64@3.22.1" || m.Version != "0.5.0" {
		t.Errorf("package %q version %q", m.Package, m.Version)
	}
	for _, want := range []string{"libllama.v0.5.0.so", "libggml.v0.5.0.so", "libggml-base.so", "libggml-cpu-x64.so"} {
		found := false
		for p := range m.Files {
			found = found || strings.HasSuffix(p, "/"+want)
		}
		if !found {
			t.Errorf("manifest lacks %s", want)
		}
	}
	if _, err := ParseManifest([]byte("# package: x\n# version: 1\nnot-a-sum  file\n")); err == nil {
		t.Error("a bad line was accepted")
	}
}

// tarball builds a .tgz holding files.
func tarball(t *testing.T, files map[string]string) string {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	gz.Close()
	p := filepath.Join(t.TempDir(), "pkg.tgz")
	os.WriteFile(p, buf.Bytes(), 0o644)
	return p
}

func sum(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

func TestExtractVerified(t *testing.T) {
	m := Manifest{Package: "p", Version: "v", Files: map[string]string{
		"package/bins/libllama.so": sum("llama"), "package/bins/libggml.so": sum("ggml"),
	}}
	good := tarball(t, map[string]string{"package/bins/libllama.so": "llama", "package/bins/libggml.so": "ggml", "package/other": "x"})
	dir := t.TempDir()
	if err := extractVerified(good, m, dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "libllama.so")); string(b) != "llama" {
		t.Errorf("extracted %q", b)
	}
	if lib, ok := installed(m, dir); !ok || lib != filepath.Join(dir, "libllama.so") {
		t.Errorf("installed = %q, %v", lib, ok)
	}
	os.WriteFile(filepath.Join(dir, "libggml.so"), []byte("tampered"), 0o644)
	if _, ok := installed(m, dir); ok {
		t.Error("a tampered install counts as installed")
	}
	bad := tarball(t, map[string]string{"package/bins/libllama.so": "evil", "package/bins/libggml.so": "ggml"})
	if err := extractVerified(bad, m, t.TempDir()); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Errorf("a wrong sum gave %v", err)
	}
	short := tarball(t, map[string]string{"package/bins/libllama.so": "llama"})
	if err := extractVerified(short, m, t.TempDir()); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("a missing file gave %v", err)
	}
}

func TestNeedToolNamesDebianPackage(t *testing.T) {
	err := NeedTool("kvtrim-no-such-tool", "some-deb", "testing")
	if err == nil || !strings.Contains(err.Error(), "apt-get install some-deb") {
		t.Errorf("got %v", err)
	}
}
