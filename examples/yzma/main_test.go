package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/internal/tasks"
)

// linkLibrary makes a folder where kvtrim's libllama (KVTRIM_LIB, or
// kvtrim's cache: 'kvtrim lib fetch') sits under the plain names yzma
// opens, beside the backends.
func linkLibrary(t *testing.T) string {
	t.Helper()
	path, _ := bindings.Locate("", bindings.OSEnv())
	if path == "" {
		t.Skip("no libllama: run 'go run github.com/kvtrim/kvtrim/cmd/kvtrim lib fetch'")
	}
	src := filepath.Dir(path)
	dir := t.TempDir()
	files, _ := filepath.Glob(filepath.Join(src, "lib*.so*"))
	for _, f := range files {
		name := filepath.Base(f)
		for _, stem := range []string{"libllama", "libggml"} {
			if strings.HasPrefix(name, stem+".") && !strings.HasPrefix(name, stem+".so") {
				name = stem + ".so" // libllama.v0.5.0.so -> libllama.so
			}
		}
		if err := os.Symlink(f, filepath.Join(dir, name)); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	return dir
}

// TestPasskeysThroughYzma: on the retrieval model, kvtrim compressing
// yzma's own context with SnapKV at 10% (a third of the prompts through
// its hook in yzma's context, a third without, a third after yzma
// prefilled the prompt itself) finds the pass keys a full-cache yzma
// run finds (at least 95% of them, over 20 prompts of 1000 tokens), and
// yzma's own memory calls show the cache shrunk to the budget.
func TestPasskeysThroughYzma(t *testing.T) {
	model := filepath.Join("..", "..", "..", "shared", "models", "kvtrim-retrieval-1m.gguf")
	if _, err := os.Stat(model); err != nil {
		t.Skipf("no retrieval model at %s", model)
	}
	r, err := open(linkLibrary(t), model)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	rng := rand.New(rand.NewPCG(7, 11))
	full, compressed := 0, 0
	const prompts = 20
	for i := range prompts {
		p := tasks.Passkey(rng, 1000, []float64{0.1, 0.5, 0.9}[i%3])
		a, err := r.generate(p.Text, 1200, 7, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		mode := []string{"hook", "temp", "host"}[i%3]
		b, err := r.generate(p.Text, 1200, 7, 0.1, mode)
		if err != nil {
			t.Fatal(err)
		}
		if p.Correct(a.Text) {
			full++
		}
		if p.Correct(b.Text) {
			compressed++
		}
		if b.KeptCells != b.Budget || b.Budget > b.PromptTokens/10+1 || int(b.PosMax) != b.PromptTokens-1 || 5*b.StateBytes > a.StateBytes {
			t.Errorf("prompt %d (%s): kept %d of %d (budget %d), yzma sees positions %d..%d and %d bytes of state against %d uncompressed",
				i, mode, b.KeptCells, b.PromptTokens, b.Budget, b.PosMin, b.PosMax, b.StateBytes, a.StateBytes)
		}
	}
	t.Logf("pass keys found: full cache %d/%d, kvtrim SnapKV 10%% in yzma's context %d/%d", full, prompts, compressed, prompts)
	if full < prompts-1 {
		t.Errorf("the full cache found %d/%d keys: the prompts are off", full, prompts)
	}
	if 100*compressed < 95*full {
		t.Errorf("SnapKV found %d keys against the full cache's %d (< 95%%)", compressed, full)
	}
}
