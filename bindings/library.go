package bindings

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// SupportedVersion is the llama.cpp release kvtrim fetches and builds by
// default, the newest of those it supports (Releases).
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
	// Version is what llama_version() reports, e.g. "0.5.0-dev" (for a
	// release without that function, the release's name, e.g. "b8390"),
	// and Release what kvtrim knows of that release.
	Version string
	Release *Release
	// FileBuild is the build the file name gives, for a release without
	// llama_version() ("b8352" from libllama.b8352.so or
	// libllama.so.0.0.8352). It is only shown: builds between two releases
	// share the older one's functions and layout, which is what kvtrim
	// checks, and a build from a source bundle without its git history
	// numbers itself 1.
	FileBuild string
	// GGMLVersion and GGMLCommit are what libggml reports.
	GGMLVersion, GGMLCommit string

	fn     functions
	params *paramCalls
	logCB  uintptr
	// Shared: another binding loaded this llama.cpp first (Share).
	Shared bool
	// borrowed are the contexts of other bindings wrapped now (Borrow).
	borrowedMu sync.Mutex
	borrowed   map[uintptr]bool
	logs       logSink
	eval       evalRegistry
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
func Load(path string) (*Library, error) { return load(path, false) }

// Share opens the llama.cpp another binding in this process already loaded
// (yzma, for one), by the same path, so that both use one copy. It checks
// the release as Load does; when that binding has registered ggml's
// backends it neither loads them again (llama.cpp does not deduplicate
// them) nor calls llama_backend_init, and it leaves llama.cpp's log to
// that binding.
func Share(path string) (*Library, error) { return load(path, true) }

func load(path string, shared bool) (*Library, error) {
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
	lib := &Library{Dir: files.dir, LlamaPath: files.llama, GGMLPath: files.ggml, GGMLBasePath: files.ggmlBase, Shared: shared}
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
	libs := []string{l.GGMLBasePath, l.GGMLPath, l.LlamaPath}
	for _, p := range libs {
		if err := checkELF(p); err != nil {
			return fmt.Errorf("libllama %s: cannot load %s as a shared library (%v); %s", l.LlamaPath, p, err, FetchHint)
		}
	}
	// Before anything is loaded, and before libggml, which in a build
	// without separate backends loads them itself.
	if err := Preflight(l.Dir); err != nil {
		return fmt.Errorf("libllama %s: %w", l.LlamaPath, err)
	}
	var handles [3]uintptr
	for i, p := range libs {
		h, err := dlopen(p)
		if err != nil {
			hint := ""
			if strings.Contains(err.Error(), "undefined symbol") {
				hint = ", perhaps libllama, libggml and libggml-base are from different builds"
			}
			return fmt.Errorf("libllama %s: cannot load %s as a shared library (%v%s); %s", l.LlamaPath, p, err, hint, FetchHint)
		}
		handles[i] = h
	}
	ggmlBase, ggml, llama := handles[0], handles[1], handles[2]
	if err := l.identify(llama, ggmlBase); err != nil {
		return err
	}
	if missing := l.fn.bindAll(llama, ggml, ggmlBase); len(missing) > 0 {
		return l.versionError(fmt.Sprintf("llama.cpp %s without %s", l.Release.Name, strings.Join(missing, ", ")))
	}
	m, _, err := l.params.modelParams()
	if err == nil {
		var c ContextParams
		if c, _, err = l.params.contextParams(); err == nil {
			err = l.Release.check(m, c, l.fn.llamaSamplerChainDefaultParams())
		}
	}
	if err != nil {
		return l.versionError(fmt.Sprintf("not laid out as llama.cpp %s: %v", l.Release.Name, err))
	}

	if l.Shared && l.fn.ggmlBackendRegCount() > 0 {
		return nil // the other binding set llama.cpp up
	}
	l.logCB = puregoCallback(l.logs.callback)
	l.fn.llamaLogSet(l.logCB, 0)
	if err := l.loadBackends(); err != nil {
		return err
	}
	l.fn.llamaBackendInit()
	return nil
}

// identify finds which supported release the library is, before any call
// whose struct layout depends on it: by llama_version() where it exists,
// else by the newest release fingerprint among its functions; its
// libggml-base must then report that release's ggml version, and its
// structs must be laid out as that release's table says (checked by the
// default-params calls in open). An unknown release is refused, never
// loaded on a guessed layout.
func (l *Library) identify(llama, ggmlBase uintptr) error {
	var llamaVersion, ggmlVersion, ggmlCommit func() string
	if bind(&ggmlVersion, ggmlBase, "ggml_version") == nil {
		l.GGMLVersion = ggmlVersion()
	}
	if bind(&ggmlCommit, ggmlBase, "ggml_commit") == nil {
		l.GGMLCommit = ggmlCommit()
	}
	var ok bool
	if bind(&llamaVersion, llama, "llama_version") == nil {
		l.Version = llamaVersion()
		if l.Release, ok = releaseOf(l.Version); !ok {
			return l.versionError("llama.cpp " + l.Version)
		}
	} else {
		has := func(symbol string) bool {
			_, err := lookup(llama, symbol)
			return err == nil
		}
		l.FileBuild = buildFromName(l.LlamaPath)
		if l.Release = releaseByFingerprint(has); l.Release == nil {
			named := ""
			if l.FileBuild != "" {
				named = " (its file name says " + l.FileBuild + ")"
			}
			return l.versionError("a llama.cpp without llama_version(), older than " + releases[len(releases)-1].Name + named)
		}
		l.Version = l.Release.Name
	}
	if l.GGMLVersion != l.Release.GGML {
		return fmt.Errorf("libllama %s is llama.cpp %s, built with ggml %s, but %s is ggml %q: use the libggml-base.so, libggml.so and backends of the same build as libllama; %s",
			l.LlamaPath, l.Release.Name, l.Release.GGML, l.GGMLBasePath, l.GGMLVersion, FetchHint)
	}
	table, err := readLayout(l.Release.Layout)
	if err == nil {
		err = table.checkMirrors()
	}
	if err == nil {
		err = table.checkFunctions(reflect.TypeFor[functions](), l.Release.LegacySamplers)
	}
	if err == nil {
		l.params, err = newParamCalls(llama, table)
	}
	if err != nil {
		return fmt.Errorf("libllama %s is llama.cpp %s, but kvtrim cannot bind it: %w", l.LlamaPath, l.Release.Name, err)
	}
	return nil
}

// loadBackends registers ggml's backends: those beside libllama (an
// upstream release folder, node-llama-cpp's prebuilts, kvtrim's own
// builds), else those in the folder ggml was built to search (Debian's
// and Homebrew's layouts keep them apart from libllama). A library with
// none could load no model.
func (l *Library) loadBackends() error {
	backends, _ := filepath.Glob(filepath.Join(l.Dir, "libggml-*.so"))
	for _, p := range backends {
		if err := checkELF(p); err != nil {
			return fmt.Errorf("libllama %s: the ggml backend %s beside it cannot be loaded (%v); %s", l.LlamaPath, p, err, FetchHint)
		}
	}
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
	return fmt.Errorf("libllama %s is %s, but kvtrim supports llama.cpp %s: %s", l.LlamaPath, found, SupportedNames(), FetchHint)
}

// checkELF refuses a file the dynamic loader would map past its end (a
// truncated download or copy): the loader maps each segment whole and the
// process dies of SIGBUS when it touches the missing pages.
func checkELF(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	e, err := elf.NewFile(f)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("the file is truncated (%d bytes)", st.Size())
	}
	if err != nil {
		return fmt.Errorf("not an ELF file: %v", err)
	}
	for _, p := range e.Progs {
		if p.Type == elf.PT_LOAD && p.Off+p.Filesz > uint64(st.Size()) {
			return fmt.Errorf("the file is truncated (%d bytes, its segments need %d)", st.Size(), p.Off+p.Filesz)
		}
	}
	return nil
}

// buildFromName reads the build a file name carries: "b8390" from
// libllama.b8390.so (node-llama-cpp's naming) or libllama.so.0.0.8390
// (upstream's), following a symbolic link to the file it names; "" when
// the name carries none.
func buildFromName(path string) string {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	base := filepath.Base(path)
	if name, ok := strings.CutPrefix(base, "libllama."); ok && strings.HasSuffix(name, ".so") && !strings.HasPrefix(name, "so") {
		return strings.TrimSuffix(name, ".so")
	}
	if n, ok := strings.CutPrefix(base, "libllama.so.0.0."); ok && n != "" && strings.Trim(n, "0123456789") == "" {
		return "b" + n
	}
	return ""
}

// bind resolves name in handle and makes fptr call it.
func bind(fptr any, handle uintptr, name string) error {
	sym, err := lookup(handle, name)
	if err != nil {
		return err
	}
	purego.RegisterFunc(fptr, sym)
	return nil
}

// dlopen opens a library by absolute path, on one OS thread: the
// message dlerror gives after a failed dlopen belongs to the thread that
// called it, and Go may move a goroutine to another between the two calls
// (the error then read empty).
func dlopen(path string) (uintptr, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
}

// lookup is the address of symbol name in handle.
func lookup(handle uintptr, name string) (uintptr, error) {
	sym, err := purego.Dlsym(handle, name)
	if err != nil || sym == 0 {
		return 0, fmt.Errorf("symbol %s not found", name)
	}
	return sym, nil
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
