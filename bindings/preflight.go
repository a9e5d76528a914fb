package bindings

import (
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/ebitengine/purego"
)

// knownProviders says what provides a library a GPU backend needs, for the
// preflight's message.
var knownProviders = map[string]string{
	"libcuda.so.1":      "the NVIDIA driver",
	"libcudart.so.13":   "the CUDA 13 runtime",
	"libcublas.so.13":   "the CUDA 13 cuBLAS",
	"libcublasLt.so.13": "the CUDA 13 cuBLAS",
	"libcudart.so.12":   "the CUDA 12 runtime",
	"libcublas.so.12":   "the CUDA 12 cuBLAS",
	"libvulkan.so.1":    "the Vulkan loader",
}

// Preflight checks, before anything is loaded, that every ggml backend
// beside libllama in dir (libggml-*.so) finds the shared libraries it
// needs. llama.cpp's release builds skip a backend that fails to load
// without a word, so a CUDA install on a machine without the CUDA runtime
// or the NVIDIA driver would run on the CPU unnoticed; Preflight instead
// returns one error naming every missing library and what provides it.
func Preflight(dir string) error {
	backends, _ := filepath.Glob(filepath.Join(dir, "libggml-*.so"))
	found := map[string]bool{} // a library name -> whether dlopen finds it
	var lines []string
	for _, b := range backends {
		missing, err := missingLibraries(b, func(name string) bool {
			ok, seen := found[name]
			if !seen {
				ok = dlopenable(name)
				found[name] = ok
			}
			return ok
		})
		if err != nil || len(missing) == 0 {
			continue // checkELF reports a file that is not a library
		}
		names := make([]string, len(missing))
		for i, m := range missing {
			names[i] = m
			if p := knownProviders[m]; p != "" {
				names[i] += " (" + p + ")"
			}
		}
		lines = append(lines, fmt.Sprintf("%s needs %s", filepath.Base(b), strings.Join(names, ", ")))
	}
	if len(lines) == 0 {
		return nil
	}
	return fmt.Errorf("ggml backends in %s cannot load, and llama.cpp would skip them silently: %s, not found beside it, on LD_LIBRARY_PATH or in the loader's cache; install them, or use kvtrim's CPU libllama (kvtrim lib fetch)", dir, strings.Join(lines, "; "))
}

// missingLibraries is the libraries the shared object at path needs
// (DT_NEEDED) that neither its RUNPATH (or RPATH, $ORIGIN being its
// folder) nor found holds.
func missingLibraries(path string, found func(name string) bool) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	needed, err := f.ImportedLibraries()
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		vals, _ := f.DynString(tag)
		for _, v := range vals {
			for _, d := range filepath.SplitList(v) {
				dirs = append(dirs, strings.ReplaceAll(d, "$ORIGIN", filepath.Dir(path)))
			}
		}
	}
	var missing []string
	for _, name := range needed {
		beside := slices.ContainsFunc(dirs, func(d string) bool {
			_, err := os.Stat(filepath.Join(d, name))
			return d != "" && err == nil
		})
		if !beside && !found(name) {
			missing = append(missing, name)
		}
	}
	return missing, nil
}

// dlopenable reports whether the dynamic loader finds a library by name
// where dlopen looks (LD_LIBRARY_PATH, the ld.so cache, the default
// folders): it is opened, lazily and privately, and closed again.
func dlopenable(name string) bool {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h, err := purego.Dlopen(name, purego.RTLD_LAZY|purego.RTLD_LOCAL)
	if err != nil {
		return false
	}
	purego.Dlclose(h)
	return true
}
