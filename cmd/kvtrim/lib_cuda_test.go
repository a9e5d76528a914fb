package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim/internal/testenv"
)

// TestLibFetchCUDA: 'kvtrim lib fetch --cuda' installs the CUDA libraries
// (checked against their manifest) beside where the CPU ones go; on a
// machine without the CUDA runtime or the NVIDIA driver, the preflight
// names each missing library in one line before anything loads (llama.cpp
// itself would skip the backend without a word), 'kvtrim lib' says so, and
// the search for a libllama passes the folder by. Where CUDA is installed
// the preflight must pass instead. Needs npm (143 MB download).
func TestLibFetchCUDA(t *testing.T) {
	if _, err := exec.LookPath("npm"); err != nil {
		t.Skip("npm not on PATH")
	}
	home := t.TempDir()
	cache := filepath.Join(home, "cache")
	env := append(os.Environ(), "HOME="+home, "XDG_CACHE_HOME="+cache, "KVTRIM_LIB=")
	r := runKvtrim(t, env, "lib", "fetch", "--cuda")
	dir := filepath.Join(cache, "kvtrim", "lib", "v0.5.0-cuda")
	if r.code != 0 || strings.TrimSpace(r.stdout) != filepath.Join(dir, "libllama.cuda.v0.5.0.so") {
		t.Fatalf("lib fetch --cuda: exit %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	// What this machine lacks, as the loader's cache and LD_LIBRARY_PATH
	// tell it apart from kvtrim.
	listed, _ := exec.Command("ldconfig", "-p").Output()
	var missing []string
	for _, lib := range []string{"libcudart.so.13", "libcublas.so.13", "libcuda.so.1"} {
		found := strings.Contains(string(listed), lib+" ")
		for _, d := range filepath.SplitList(os.Getenv("LD_LIBRARY_PATH")) {
			if _, err := os.Stat(filepath.Join(d, lib)); d != "" && err == nil {
				found = true
			}
		}
		if !found {
			missing = append(missing, lib)
		}
	}
	run := runKvtrim(t, env, "run", "--lib", dir, "-m", testenv.ModelPath(t, "stories260K.gguf"), "-p", "Once", "-n", "2")
	if len(missing) == 0 {
		if run.code != 0 {
			t.Errorf("CUDA is installed here, but the CUDA libllama did not run: %s", run.stderr)
		}
		t.Skip("CUDA is installed here: nothing is missing for the preflight to name")
	}
	want := append([]string{"libggml-cuda.so needs", "kvtrim lib fetch"}, missing...)
	if strings.Contains(strings.Join(missing, " "), "libcuda.so.1") {
		want = append(want, "NVIDIA driver")
	}
	wantOneLineError(t, run, want...)
	lib := runKvtrim(t, env, "lib")
	for _, w := range []string{"CUDA libraries (kvtrim lib fetch --cuda): " + dir + ": ggml backends", "cache cuda", "(skipped: "} {
		if !strings.Contains(lib.stdout, w) {
			t.Errorf("kvtrim lib does not say %q:\n%s", w, lib.stdout)
		}
	}
}
