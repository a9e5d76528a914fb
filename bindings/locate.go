package bindings

import (
	"os"
	"os/exec"
	"path/filepath"
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

// DefaultPrefixes are the usual install folders searched after PATH.
var DefaultPrefixes = []string{
	"/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu",
	"/opt/llama.cpp/lib", "/opt/llama.cpp/build/bin", "/opt/llama.cpp",
}

// CacheDir is where 'kvtrim lib fetch' installs libllama:
// $XDG_CACHE_HOME/kvtrim/lib/v<version>, or ~/.cache/kvtrim/lib/v<version>.
func CacheDir(env Env) string {
	base := env.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home := env.Getenv("HOME")
		if home == "" {
			home = "/tmp"
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "kvtrim", "lib", "v"+SupportedVersion)
}

// Locate finds libllama, looking in this order: explicit (the --lib flag), the
// KVTRIM_LIB variable (each a file or a folder); the folders of llama-server
// and llama-cli on PATH and their ../lib; DefaultPrefixes; kvtrim's cache.
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
	for _, dir := range DefaultPrefixes {
		if f := try("prefix", dir); f != "" {
			return f, places
		}
	}
	return try("cache", CacheDir(env)), places
}
