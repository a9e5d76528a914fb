// Package native installs the llama.cpp releases kvtrim supports: a
// release's prebuilt CPU libraries (or CUDA ones, manifest-<release>-cuda.txt)
// from their npm package, checked against the sha256 sums in its
// manifest-<release>.txt, or a build of its source
// made by build-llama.sh. The scripts and manifests are embedded, so an
// installed kvtrim binary can do this on its own.
package native

import (
	"bufio"
	"bytes"
	"embed"
	"fmt"
	"sort"
	"strings"
)

//go:embed manifest-*.txt
var manifestFiles embed.FS

//go:embed build-llama.sh llama-source.sh
var scripts embed.FS

// Manifest is a prebuilt release: which npm package holds it, which files
// kvtrim installs from it, and their sha256 sums.
type Manifest struct {
	Package string // npm package@version
	Version string // llama.cpp release, as kvtrim names it ("0.5.0", "b8390")
	// Flavor is "" for the CPU libraries, or the GPU backend the package
	// adds to them ("cuda").
	Flavor string
	Files  map[string]string // path inside the package tarball -> sha256 hex
}

// FlavorCUDA is the flavor of a package built with ggml's CUDA backend.
const FlavorCUDA = "cuda"

// NodeLlamaCpp is the node-llama-cpp version whose package holds the
// release: its source bundle is in node-llama-cpp@that version.
func (m Manifest) NodeLlamaCpp() string {
	_, v, _ := strings.Cut(strings.TrimPrefix(m.Package, "@"), "@")
	return v
}

// Manifests returns every embedded manifest, sorted by release name.
func Manifests() ([]Manifest, error) {
	entries, err := manifestFiles.ReadDir(".")
	if err != nil {
		return nil, err
	}
	var out []Manifest
	for _, e := range entries {
		text, err := manifestFiles.ReadFile(e.Name())
		if err != nil {
			return nil, err
		}
		m, err := ParseManifest(text)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// ManifestFor returns the manifest of the CPU libraries of the release
// named version ("0.5.0", "v0.5.0" or "b8390").
func ManifestFor(version string) (Manifest, error) { return ManifestOf(version, "") }

// ManifestOf returns the manifest of the release named version in flavor
// ("" for the CPU libraries, FlavorCUDA).
func ManifestOf(version, flavor string) (Manifest, error) {
	all, err := Manifests()
	if err != nil {
		return Manifest{}, err
	}
	var names []string
	for _, m := range all {
		if m.Flavor != flavor {
			continue
		}
		if m.Version == strings.TrimPrefix(version, "v") {
			return m, nil
		}
		names = append(names, m.Version)
	}
	what := "llama.cpp"
	if flavor != "" {
		what = flavor + " llama.cpp"
	}
	return Manifest{}, fmt.Errorf("no prebuilt %s %q: kvtrim has manifests for %s", what, version, strings.Join(names, ", "))
}

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
			case "flavor":
				m.Flavor = val
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
