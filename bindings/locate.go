package bindings

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Place is one location Locate looked at.
type Place struct {
	// Source says why it was looked at: "--lib", "KVTRIM_LIB", "PATH llama-server", ...
	Source string
	// Path is the file or folder.
	Path string
	// Found is the libllama it holds, or "".
	Found string
}

// Env is what Locate reads of the environment.
type Env struct {
	Getenv   func(string) string          // os.Getenv
	LookPath func(string) (string, error) // exec.LookPath
}

// OSEnv is the process's real environment.
func OSEnv() Env { return Env{Getenv: os.Getenv, LookPath: exec.LookPath} }

// DefaultPrefixes are the usual install folders searched after PATH and
// LD_LIBRARY_PATH: a source install's, Debian's multiarch folder (whose
// backends ggml finds in ggml/backends0 itself), Homebrew on Linux's, and
// an upstream build or release folder unpacked into /opt.
var DefaultPrefixes = []string{
	"/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu",
	"/home/linuxbrew/.linuxbrew/lib",
	"/opt/llama.cpp/lib", "/opt/llama.cpp/build/bin", "/opt/llama.cpp",
}

// CacheDir is where 'kvtrim lib fetch' installs the default release:
// CacheDirFor(env, SupportedVersion).
func CacheDir(env Env) string { return CacheDirFor(env, SupportedVersion) }

// CUDACacheDir is where 'kvtrim lib fetch --cuda' installs the default
// release's CUDA libraries, beside the CPU ones.
func CUDACacheDir(env Env) string { return CUDACacheDirFor(env, SupportedVersion) }

// CUDACacheDirFor is where 'kvtrim lib fetch --cuda --version' installs a
// release's CUDA libraries: its CacheDirFor with "-cuda" after it.
func CUDACacheDirFor(env Env, release string) string { return CacheDirFor(env, release) + "-cuda" }

// HasCUDA reports whether dir holds ggml's CUDA backend.
func HasCUDA(dir string) bool { return fileExists(filepath.Join(dir, "libggml-cuda.so")) }

// CacheDirFor is where 'kvtrim lib fetch --version' installs a release:
// $XDG_CACHE_HOME/kvtrim/lib/<dir>, or ~/.cache/kvtrim/lib/<dir>, where
// dir is "v0.5.0" for a version and "b8390" for a build.
func CacheDirFor(env Env, release string) string {
	base := env.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home := env.Getenv("HOME")
		if home == "" {
			home = "/tmp"
		}
		base = filepath.Join(home, ".cache")
	}
	dir := strings.TrimPrefix(release, "v")
	if !strings.HasPrefix(dir, "b") {
		dir = "v" + dir
	}
	return filepath.Join(base, "kvtrim", "lib", dir)
}

// Locate finds libllama, looking in this order: explicit (the --lib flag), the
// KVTRIM_LIB variable (each a file or a folder); the folders of llama-server
// and llama-cli on PATH and their ../lib; LD_LIBRARY_PATH; DefaultPrefixes;
// kvtrim's cache: the default release's CUDA libraries when they are there
// and their backends find what they need (Preflight), the default
// release's CPU ones, and then the other releases'.
// It returns the first libllama found ("" if none) and every place it looked,
// in order. An explicit path or KVTRIM_LIB that holds no libllama ends the
// search: the user asked for that one.
func Locate(explicit string, env Env) (string, []Place) {
	var places []Place
	try := func(source, path string) string {
		p := Place{Source: source, Path: path}
		if st, err := os.Stat(path); err == nil {
			if !st.IsDir() {
				p.Found = path
			} else {
				p.Found = findLib(path, "libllama")
			}
		}
		places = append(places, p)
		return p.Found
	}
	if explicit != "" {
		return try("--lib", explicit), places
	}
	if v := env.Getenv("KVTRIM_LIB"); v != "" {
		return try("KVTRIM_LIB", v), places
	}
	for _, tool := range []string{"llama-server", "llama-cli"} {
		bin, err := env.LookPath(tool)
		if err != nil {
			places = append(places, Place{Source: "PATH " + tool, Path: "(not on PATH)"})
			continue
		}
		if real, err := filepath.EvalSymlinks(bin); err == nil {
			bin = real
		}
		dir := filepath.Dir(bin)
		if f := try("PATH "+tool, dir); f != "" {
			return f, places
		}
		if f := try("PATH "+tool, filepath.Join(dir, "..", "lib")); f != "" {
			return f, places
		}
	}
	for _, dir := range filepath.SplitList(env.Getenv("LD_LIBRARY_PATH")) {
		if dir == "" {
			continue
		}
		if f := try("LD_LIBRARY_PATH", dir); f != "" {
			return f, places
		}
	}
	for _, dir := range DefaultPrefixes {
		if f := try("prefix", dir); f != "" {
			return f, places
		}
	}
	if dir := CUDACacheDir(env); HasCUDA(dir) {
		if err := Preflight(dir); err != nil {
			places = append(places, Place{Source: "cache cuda", Path: dir + " (skipped: " + err.Error() + ")"})
		} else if f := try("cache cuda", dir); f != "" {
			return f, places
		}
	}
	if f := try("cache", CacheDir(env)); f != "" {
		return f, places
	}
	// Other releases fetched with 'kvtrim lib fetch --version', newest first.
	for _, r := range releases {
		dir := CacheDirFor(env, r.Name)
		if dir == CacheDir(env) {
			continue
		}
		if _, err := os.Stat(dir); err == nil {
			if f := try("cache", dir); f != "" {
				return f, places
			}
		}
	}
	return "", places
}
