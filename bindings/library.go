package bindings

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// SupportedVersion is the llama.cpp release kvtrim fetches and builds by
// default, the newest of those it supports (releases).
const SupportedVersion = "0.5.0"

// FetchHint tells a user how to get a supported libllama.
const FetchHint = "run 'kvtrim lib fetch' to install llama.cpp " + SupportedVersion + " into kvtrim's cache, or point --lib (KVTRIM_LIB) at a build of it"

// Library is a loaded llama.cpp. There is at most one per process, because
// the dynamic loader shares loaded libraries process-wide; Load returns it.
type Library struct {
	// Dir is the folder the libraries were loaded from.
	Dir string
	// LlamaPath, GGMLPath and GGMLBasePath are the files that were opened.
	LlamaPath, GGMLPath, GGMLBasePath string
	// Version is what llama_version() reports, e.g. "0.5.0-dev", and
	// Release what kvtrim knows of that release.
	Version string
	Release *Release
	// GGMLVersion and GGMLCommit are what libggml reports.
	GGMLVersion, GGMLCommit string

	fn    functions
	logCB uintptr
	logs  logSink
	eval  evalRegistry
}

var (
	loadMu sync.Mutex
	loaded *Library // the process's one llama.cpp, once loaded
)

// Load opens libggml-base, libggml and libllama from the folder of path (a
// libllama file or a folder holding one), in that order and by absolute path,
// loads ggml's compute backends from that folder, and checks that the library
// is the supported llama.cpp version. Loading the same folder again returns
// the same Library; loading a different one in the same process is an error.
func Load(path string) (*Library, error) {
	files, err := libraryFiles(path)
	if err != nil {
		return nil, err
	}
	loadMu.Lock()
	defer loadMu.Unlock()
	if loaded != nil {
		if loaded.LlamaPath == files.llama {
			return loaded, nil
		}
		return nil, fmt.Errorf("libllama %s: another llama.cpp (%s) is already loaded in this process", files.llama, loaded.LlamaPath)
	}
	lib := &Library{Dir: files.dir, LlamaPath: files.llama, GGMLPath: files.ggml, GGMLBasePath: files.ggmlBase}
	if err := lib.open(); err != nil {
		return nil, err
	}
	loaded = lib
	return lib, nil
}

type libFiles struct{ dir, llama, ggml, ggmlBase string }

// libraryFiles finds the three shared libraries in the folder of path.
func libraryFiles(path string) (libFiles, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return libFiles{}, fmt.Errorf("libllama %s: %w", path, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return libFiles{}, fmt.Errorf("libllama %s: no such file or folder; %s", abs, FetchHint)
		}
		return libFiles{}, fmt.Errorf("libllama %s: %w", abs, err)
	}
	f := libFiles{dir: abs}
	if !st.IsDir() {
		f.dir, f.llama = filepath.Dir(abs), abs
	}
	if f.llama == "" {
		if f.llama = findLib(f.dir, "libllama"); f.llama == "" {
			return libFiles{}, fmt.Errorf("libllama: folder %s has no libllama.so; %s", f.dir, FetchHint)
		}
	}
	if f.ggml = findLib(f.dir, "libggml"); f.ggml == "" {
		return libFiles{}, fmt.Errorf("libllama %s: no libggml.so beside it in %s; a llama.cpp built with shared libraries keeps them together", f.llama, f.dir)
	}
	if f.ggmlBase = findLib(f.dir, "libggml-base"); f.ggmlBase == "" {
		return libFiles{}, fmt.Errorf("libllama %s: no libggml-base.so beside it in %s; a llama.cpp built with shared libraries keeps them together", f.llama, f.dir)
	}
	return f, nil
}

// findLib returns the file in dir named stem.so, stem.<version>.so (as
// node-llama-cpp names them) or stem.so.<version>, preferring the plain
// name, or "" if none exists.
func findLib(dir, stem string) string {
	plain := filepath.Join(dir, stem+".so")
	if fileExists(plain) {
		return plain
	}
	for _, pattern := range []string{stem + ".*.so", stem + ".so.*"} {
		matches, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, m := range matches {
			if fileExists(m) {
				return m
			}
		}
	}
	return ""
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}

func (l *Library) open() error {
	var handles [3]uintptr
	for i, p := range []string{l.GGMLBasePath, l.GGMLPath, l.LlamaPath} {
		h, err := purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			return fmt.Errorf("libllama %s: cannot load %s as a shared library (%v); %s", l.LlamaPath, p, err, FetchHint)
		}
		handles[i] = h
	}
	ggmlBase, ggml, llama := handles[0], handles[1], handles[2]

	// Check the version before any call whose struct layout depends on it.
	var llamaVersion, ggmlVersion, ggmlCommit func() string
	if err := bind(&llamaVersion, llama, "llama_version"); err != nil {
		return l.versionError("a llama.cpp without llama_version(), " + releaseBySymbols(llama) + versionFromName(l.LlamaPath) + ", older than " + SupportedVersion)
	}
	if bind(&ggmlVersion, ggmlBase, "ggml_version") == nil {
		l.GGMLVersion = ggmlVersion()
	}
	if bind(&ggmlCommit, ggmlBase, "ggml_commit") == nil {
		l.GGMLCommit = ggmlCommit()
	}
	l.Version = llamaVersion()
	release, ok := releaseOf(l.Version)
	if !ok {
		return l.versionError("llama.cpp " + l.Version)
	}
	l.Release = release
	if missing := l.fn.bindAll(llama, ggml, ggmlBase); len(missing) > 0 {
		return l.versionError(fmt.Sprintf("llama.cpp %s without %s", l.Version, strings.Join(missing, ", ")))
	}
	if err := l.Release.check(l); err != nil {
		return l.versionError(fmt.Sprintf("llama.cpp %s whose %v", l.Version, err))
	}

	l.logCB = puregoCallback(l.logs.callback)
	l.fn.llamaLogSet(l.logCB, 0)
	if err := l.loadBackends(); err != nil {
		return err
	}
	l.fn.llamaBackendInit()
	return nil
}

// loadBackends registers ggml's backends: those beside libllama (an
// upstream release folder, node-llama-cpp's prebuilts, kvtrim's own
// builds), else those in the folder ggml was built to search (Debian's
// and Homebrew's layouts keep them apart from libllama). A library with
// none could load no model.
func (l *Library) loadBackends() error {
	l.fn.ggmlBackendLoadAllFromPath(l.Dir)
	if l.fn.ggmlBackendRegCount() == 0 {
		l.fn.ggmlBackendLoadAll()
	}
	if l.fn.ggmlBackendRegCount() == 0 {
		return fmt.Errorf("libllama %s: no ggml backend to compute with, neither beside it nor where ggml looks (a build with separate backends keeps libggml-cpu*.so next to libllama); %s", l.LlamaPath, FetchHint)
	}
	return nil
}

func (l *Library) versionError(found string) error {
	return fmt.Errorf("libllama %s is %s, but kvtrim supports llama.cpp %s: %s", l.LlamaPath, found, SupportedVersion, FetchHint)
}

// symbolFingerprints tell apart the llama.cpp releases that have no
// llama_version(), by the newest of them whose first new function the
// library has (probed in node-llama-cpp's prebuilts 3.18.1 to 3.20.0).
var symbolFingerprints = []struct{ symbol, release string }{
	{"llama_sampler_copy", "b10361"},
	{"llama_model_ftype", "b10068"},
	{"llama_n_rs_seq", "b9842"},
}

// releaseBySymbols names the release a libllama without llama_version()
// is closest to, by its functions.
func releaseBySymbols(handle uintptr) string {
	for _, f := range symbolFingerprints {
		if sym, err := purego.Dlsym(handle, f.symbol); err == nil && sym != 0 {
			return "whose functions are those of " + f.release + " or a build after it"
		}
	}
	return "whose functions are those of b8390 or older"
}

// versionFromName reads a version from a file name like libllama.b8390.so.
func versionFromName(path string) string {
	base := filepath.Base(path)
	name, ok := strings.CutPrefix(base, "libllama.")
	if !ok || !strings.HasSuffix(name, ".so") || strings.HasPrefix(name, "so") {
		return ""
	}
	return " (its file name says " + strings.TrimSuffix(name, ".so") + ")"
}

// bind resolves name in handle and makes fptr call it.
func bind(fptr any, handle uintptr, name string) error {
	sym, err := purego.Dlsym(handle, name)
	if err != nil || sym == 0 {
		return fmt.Errorf("symbol %s not found", name)
	}
	purego.RegisterFunc(fptr, sym)
	return nil
}

// goString copies a NUL-terminated C string.
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}

// cString returns a NUL-terminated copy of s for a C call.
func cString(s string) *byte {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return &b[0]
}
