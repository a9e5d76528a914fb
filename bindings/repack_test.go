package bindings_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/internal/gguf"
	"github.com/kvtrim/kvtrim/internal/testenv"
)

// TestNoRepack: with ModelOptions.NoRepack (llama.cpp's --no-repack) the
// weights load into plain CPU buffers, where by default llama.cpp repacks
// what its CPU kernels can (AMX, or interleaved q8_0 layouts) into extra
// buffer types, as its log says. Loading only: a native build on a CPU
// with AMX crashes when it multiplies repacked q8_0 weights
// (docs/LLAMA-FACTS.md). Skipped where this CPU's build repacks nothing.
func TestNoRepack(t *testing.T) {
	lib := testenv.Library(t)
	s, err := gguf.ShapeByName("test")
	if err != nil {
		t.Fatal(err)
	}
	s.Type = "q8_0"
	path := filepath.Join(t.TempDir(), "q8.gguf")
	if err := gguf.WriteRandomLlamaFile(path, s, 1); err != nil {
		t.Fatal(err)
	}
	defer lib.SetLogger(testenv.Logger())
	// extraBuffers loads the model and returns the model buffers llama.cpp
	// logged besides its plain CPU ones.
	extraBuffers := func(opt bindings.ModelOptions) []string {
		var logged testenv.SyncBuffer
		lib.SetLogger(zerolog.New(&logged).Level(zerolog.DebugLevel))
		m, err := lib.LoadModel(path, opt)
		if err != nil {
			t.Fatalf("load %+v: %v", opt, err)
		}
		m.Close()
		lib.SetLogger(testenv.Logger())
		var extra []string
		for _, line := range strings.Split(logged.String(), "\n") {
			var entry struct{ Message string }
			if json.Unmarshal([]byte(line), &entry) != nil {
				continue
			}
			before, _, ok := strings.Cut(entry.Message, " model buffer size")
			if f := strings.Fields(before); ok && len(f) > 0 && f[len(f)-1] != "CPU" && f[len(f)-1] != "CPU_Mapped" {
				extra = append(extra, f[len(f)-1])
			}
		}
		return extra
	}
	if extra := extraBuffers(bindings.ModelOptions{GPULayers: -1}); len(extra) == 0 {
		t.Skip("llama.cpp repacks no q8_0 weights on this CPU: nothing for NoRepack to turn off")
	}
	if extra := extraBuffers(bindings.ModelOptions{GPULayers: -1, NoRepack: true}); len(extra) != 0 {
		t.Errorf("NoRepack: the weights still went to %v", extra)
	}
}
