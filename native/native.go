// Package native installs the llama.cpp that kvtrim supports: the pinned
// prebuilt CPU libraries from their npm package, checked against the sha256
// sums in manifest-v0.5.0.txt, or a build of the pinned source made by
// build-llama.sh. Both scripts and the manifest are embedded, so an installed
// kvtrim binary can do this on its own.
package native

import (
	"bufio"
	"bytes"
	_ "embed"
	"fmt"
	"strings"
)

//go:embed manifest-v0.5.0.txt
var manifestText []byte

//go:embed build-llama.sh
var buildScript []byte

// Manifest is a pinned prebuilt release: which npm package holds it, which
// files kvtrim installs from it, and their sha256 sums.
type Manifest struct {
	Package string            // npm package@version
	Version string            // llama.cpp version
	Files   map[string]string // path inside the package tarball -> sha256 hex
}

// PinnedManifest is the release kvtrim supports.
func PinnedManifest() (Manifest, error) { return ParseManifest(manifestText) }

// ParseManifest reads a manifest: "# package: ..." and "# version: ..." lines,
// then one "sha256  path" line per file, as sha256sum prints them.
func ParseManifest(text []byte) (Manifest, error) {
	m := Manifest{Files: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if key, val, ok := strings.Cut(strings.TrimPrefix(line, "# "), ": "); ok && strings.HasPrefix(line, "#") {
			switch key {
			case "package":
				m.Package = val
			case "version":
				m.Version = val
			}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sum, path, ok := strings.Cut(line, "  ")
		if !ok || len(sum) != 64 {
			return Manifest{}, fmt.Errorf("manifest: bad line %q", line)
		}
		m.Files[path] = sum
	}
	if m.Package == "" || m.Version == "" || len(m.Files) == 0 {
		return Manifest{}, fmt.Errorf("manifest: package, version or files missing")
	}
	return m, nil
}
