package native

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim/bindings"
)

// TestManifests: every supported llama.cpp release has a manifest naming
// its package, its three libraries and CPU backends, and no manifest is of
// a release kvtrim does not support.
func TestManifests(t *testing.T) {
	all, err := Manifests()
	if err != nil {
		t.Fatal(err)
	}
	cpu := 0
	for _, m := range all {
		if m.Flavor == "" {
			cpu++
		}
	}
	if cpu != len(bindings.Releases()) {
		t.Errorf("%d CPU manifests for %d supported releases", cpu, len(bindings.Releases()))
	}
	if m, err := ManifestOf(bindings.SupportedVersion, FlavorCUDA); err != nil || m.Package != "@node-llama-cpp/linux-x64-cuda@3.22.1" || m.Version != bindings.SupportedVersion {
		t.Errorf("the default release's CUDA manifest: %+v %v", m.Package, err)
	} else if _, err := ManifestOf("b8390", FlavorCUDA); err == nil || !strings.Contains(err.Error(), "cuda llama.cpp") {
		t.Errorf("a release without a CUDA manifest: %v", err)
	}
	for _, r := range bindings.Releases() {
		m, err := ManifestFor(r.Name)
		if err != nil {
			t.Error(err)
			continue
		}
		if !strings.HasPrefix(m.Package, "@node-llama-cpp/linux-x64@") || m.NodeLlamaCpp() == "" {
			t.Errorf("%s: package %q", r.Name, m.Package)
		}
		for _, want := range []string{"libllama.", "libggml.", "libggml-base.so", "libggml-cpu-x64.so"} {
			found := false
			for p := range m.Files {
				found = found || strings.HasPrefix(path.Base(p), want)
			}
			if !found {
				t.Errorf("%s: manifest lacks %s", r.Name, want)
			}
		}
	}
	if m, err := ManifestFor("v" + bindings.SupportedVersion); err != nil || m.Package != "@node-llama-cpp/linux-x64@3.22.1" {
		t.Errorf("default release: %v %v", m.Package, err)
	}
	if _, err := ManifestFor("b1"); err == nil || !strings.Contains(err.Error(), "b8390") {
		t.Errorf("an unknown release: %v, want an error listing the known ones", err)
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
	if lib, ok := Installed(m, dir); !ok || lib != filepath.Join(dir, "libllama.so") {
		t.Errorf("installed = %q, %v", lib, ok)
	}
	os.WriteFile(filepath.Join(dir, "libggml.so"), []byte("tampered"), 0o644)
	if _, ok := Installed(m, dir); ok {
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
