package native

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// Progress receives one line per step of a long operation.
type Progress func(msg string)

// NeedTool returns an error naming the Debian package to install when the
// command tool is not on PATH.
func NeedTool(tool, debianPackage, why string) error {
	if _, err := exec.LookPath(tool); err != nil {
		return fmt.Errorf("%s needs %s, which is not on PATH: install it with 'apt-get install %s'", why, tool, debianPackage)
	}
	return nil
}

// Fetch installs the pinned prebuilt libraries into dir: it runs 'npm pack'
// for the manifest's package (npm knows its registry), extracts the listed
// files, checks each against its sha256 sum, and only then moves them into
// place, so dir never holds a partial or unverified install. It returns the
// path of libllama in dir.
func Fetch(ctx context.Context, m Manifest, dir string, progress Progress) (string, error) {
	if err := NeedTool("npm", "npm", "kvtrim lib fetch"); err != nil {
		return "", err
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("lib fetch: create %s: %w", parent, err)
	}
	// One fetch at a time per folder: parallel test processes share the cache.
	unlock, err := lockFile(dir + ".lock")
	if err != nil {
		return "", fmt.Errorf("lib fetch: %w", err)
	}
	defer unlock()
	if lib, ok := Installed(m, dir); ok {
		progress("already installed and verified")
		return lib, nil
	}
	work, err := os.MkdirTemp(parent, ".fetch-")
	if err != nil {
		return "", fmt.Errorf("lib fetch: %w", err)
	}
	defer os.RemoveAll(work)

	progress(fmt.Sprintf("downloading %s with npm", m.Package))
	cmd := exec.CommandContext(ctx, "npm", "pack", "--silent", "--pack-destination", work, m.Package)
	cmd.Dir = work
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("lib fetch: npm pack %s: %v: %s", m.Package, err, strings.TrimSpace(lastLine(out)))
	}
	tgz := filepath.Join(work, strings.TrimSpace(lastLine(out)))
	staged := filepath.Join(work, "lib")
	if err := os.Mkdir(staged, 0o755); err != nil {
		return "", fmt.Errorf("lib fetch: %w", err)
	}
	progress(fmt.Sprintf("checking %d files against the sha256 sums in the manifest", len(m.Files)))
	if err := extractVerified(tgz, m, staged); err != nil {
		return "", fmt.Errorf("lib fetch: %s: %w", m.Package, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("lib fetch: replace %s: %w", dir, err)
	}
	if err := os.Rename(staged, dir); err != nil {
		return "", fmt.Errorf("lib fetch: install into %s: %w", dir, err)
	}
	if lib := libllamaIn(m, dir); lib != "" {
		return lib, nil
	}
	return "", errors.New("lib fetch: manifest lists no libllama")
}

// libllamaIn is the path libllama of manifest m has once installed in dir.
func libllamaIn(m Manifest, dir string) string {
	for p := range m.Files {
		if name := path.Base(p); strings.HasPrefix(name, "libllama") {
			return filepath.Join(dir, name)
		}
	}
	return ""
}

// Installed reports whether dir already holds every file of m with the
// right sum, and returns its libllama.
func Installed(m Manifest, dir string) (string, bool) {
	for p, want := range m.Files {
		f, err := os.Open(filepath.Join(dir, path.Base(p)))
		if err != nil {
			return "", false
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil || hex.EncodeToString(h.Sum(nil)) != want {
			return "", false
		}
	}
	lib := libllamaIn(m, dir)
	return lib, lib != ""
}

// lockFile takes an exclusive lock on path, waiting for other processes.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// extractVerified writes the manifest's files from the tarball into dir,
// flattened, and fails unless every one is present with the right sum.
func extractVerified(tgz string, m Manifest, dir string) error {
	f, err := os.Open(tgz)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("not a gzip tarball: %w", err)
	}
	tr := tar.NewReader(gz)
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tarball: %w", err)
		}
		want, ok := m.Files[h.Name]
		if !ok || h.Typeflag != tar.TypeReg {
			continue
		}
		dst := filepath.Join(dir, path.Base(h.Name))
		if err := writeChecked(dst, tr, want); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		seen[h.Name] = true
	}
	for p := range m.Files {
		if !seen[p] {
			return fmt.Errorf("%s is missing from the package", p)
		}
	}
	return nil
}

func writeChecked(dst string, r io.Reader, wantSum string) error {
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), r); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != wantSum {
		return fmt.Errorf("sha256 %s, the manifest says %s: the download is corrupt or not the pinned release", got, wantSum)
	}
	return nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// BuildOptions say what Build builds and where.
type BuildOptions struct {
	// Dir receives the libraries and tools.
	Dir string
	// NodeLlamaCpp is the node-llama-cpp version whose source bundle to
	// build (a Manifest's NodeLlamaCpp); empty builds the default release.
	NodeLlamaCpp string
	// CUDA builds the CUDA backend too, RPC ggml's RPC backend and
	// ggml-rpc-server; Jobs is the parallel compile jobs (0: all cores).
	CUDA, RPC bool
	Jobs      int
	// Tools are the llama.cpp programs to build beside the libraries (nil:
	// the script's llama-completion, llama-server and llama-bench).
	Tools []string
}

// Build compiles a release's llama.cpp source with the embedded
// build-llama.sh (CMake) and installs libraries and tools into o.Dir. Its
// output goes to log.
func Build(ctx context.Context, o BuildOptions, log io.Writer) error {
	for _, t := range [][3]string{{"cmake", "cmake", "kvtrim lib build"}, {"npm", "npm", "kvtrim lib build"}, {"git", "git", "kvtrim lib build"}, {"c++", "build-essential", "kvtrim lib build"}} {
		if err := NeedTool(t[0], t[1], t[2]); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "kvtrim-build-llama-")
	if err != nil {
		return fmt.Errorf("lib build: %w", err)
	}
	defer os.RemoveAll(dir)
	for _, name := range []string{"build-llama.sh", "llama-source.sh"} {
		text, err := scripts.ReadFile(name)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name), text, 0o755)
		}
		if err != nil {
			return fmt.Errorf("lib build: %w", err)
		}
	}
	args := []string{filepath.Join(dir, "build-llama.sh")}
	if o.CUDA {
		args = append(args, "--cuda")
	}
	if o.RPC {
		args = append(args, "--rpc")
	}
	if o.Tools != nil {
		args = append(args, "--tools", strings.Join(o.Tools, " "))
	}
	if o.Jobs > 0 {
		args = append(args, "--jobs", fmt.Sprint(o.Jobs))
	}
	if o.NodeLlamaCpp != "" {
		args = append(args, "--node-llama-cpp", o.NodeLlamaCpp)
	}
	args = append(args, o.Dir)
	cmd := exec.CommandContext(ctx, "bash", args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("lib build: native/build-llama.sh %s: %w", strings.Join(args[1:], " "), err)
	}
	return nil
}
