package gguf_test

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/internal/gguf"
	"github.com/kvtrim/kvtrim/internal/testenv"
)

// loadShape writes the preset shape called name, with the sliding window
// set to window when it is above 0, and loads it with the real llama.cpp.
func loadShape(t *testing.T, lib *bindings.Library, name string, window int) (gguf.Shape, *bindings.Model) {
	t.Helper()
	s, err := gguf.ShapeByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if window > 0 {
		s.Window = window
	}
	path := filepath.Join(t.TempDir(), name+".gguf")
	if err := gguf.WriteRandomLlamaFile(path, s, 42); err != nil {
		t.Fatal(err)
	}
	m, err := lib.LoadModel(path, bindings.ModelOptions{GPULayers: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	if got := []int{m.NLayer(), m.NEmbd(), m.NCtxTrain(), m.Vocab().NTokens()}; got[0] != s.Layers || got[1] != s.Embd || got[2] != s.Ctx || got[3] != s.Vocab {
		t.Errorf("n_layer, n_embd, n_ctx_train, n_vocab = %v, want %v", got, []int{s.Layers, s.Embd, s.Ctx, s.Vocab})
	}
	if m.Meta("general.name") != "kvtrim random "+name {
		t.Errorf("general.name %q", m.Meta("general.name"))
	}
	return s, m
}

// decodeAll decodes tokens in one batch with an F32 cache and returns the
// logits of every position, one row each, checking that they are finite.
func decodeAll(t *testing.T, lib *bindings.Library, m *bindings.Model, tokens []bindings.Token) [][]float32 {
	t.Helper()
	ctx, err := m.NewContext(bindings.ContextOptions{NCtx: 64, NBatch: 64, Threads: 1, NoPerf: true,
		CacheTypeK: bindings.CacheF32, CacheTypeV: bindings.CacheF32})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	batch := lib.NewBatch(64, 1)
	defer batch.Close()
	for i, tok := range tokens {
		batch.Add(tok, bindings.Pos(i), []bindings.SeqID{0}, true)
	}
	if err := ctx.Decode(batch); err != nil {
		t.Fatal(err)
	}
	rows := make([][]float32, len(tokens))
	for i := range tokens {
		rows[i] = append([]float32(nil), ctx.Logits(i)...)
		checkLogits(t, rows[i], m.Vocab().NTokens(), i)
	}
	return rows
}

// decodeGreedy decodes a prompt, then n greedy tokens one batch each,
// checking that every logit is finite.
func decodeGreedy(t *testing.T, lib *bindings.Library, m *bindings.Model, prompt string, n int) {
	t.Helper()
	tokens, err := m.Vocab().Tokenize(prompt, true, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := m.NewContext(bindings.ContextOptions{NCtx: 64, NBatch: 64, Threads: 1, NoPerf: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	batch := lib.NewBatch(64, 1)
	defer batch.Close()
	for i, tok := range tokens {
		batch.Add(tok, bindings.Pos(i), []bindings.SeqID{0}, i == len(tokens)-1)
	}
	if err := ctx.Decode(batch); err != nil {
		t.Fatal(err)
	}
	nv := m.Vocab().NTokens()
	lg := ctx.Logits(len(tokens) - 1)
	checkLogits(t, lg, nv, len(tokens)-1)
	for i := range n {
		batch.Clear()
		batch.Add(argmax(lg), bindings.Pos(len(tokens)+i), []bindings.SeqID{0}, true)
		if err := ctx.Decode(batch); err != nil {
			t.Fatalf("decode position %d: %v", len(tokens)+i, err)
		}
		lg = ctx.Logits(0)
		checkLogits(t, lg, nv, len(tokens)+i)
	}
}

// TestSlidingWindowModelRunsInLlamaCpp loads the "test-swa" preset, a
// gemma2 model, with the real llama.cpp: it must report its sliding window
// and decode past it with finite logits. The same weights with a window
// wider than the sequence must give the same logits up to the window and
// different ones after it, which shows the window is in force.
func TestSlidingWindowModelRunsInLlamaCpp(t *testing.T) {
	lib := testenv.Library(t)
	s, m := loadShape(t, lib, "test-swa", 0)
	if m.Arch() != "gemma2" || m.NSWA() != s.Window || s.Window <= 0 {
		t.Fatalf("architecture %q, n_swa %d: want gemma2 with a window of %d", m.Arch(), m.NSWA(), s.Window)
	}
	if m.IsRecurrent() || m.IsHybrid() {
		t.Errorf("recurrent %v, hybrid %v: want neither", m.IsRecurrent(), m.IsHybrid())
	}
	if m.NHead() != s.Heads || m.NHeadKV() != s.KVHeads {
		t.Errorf("n_head %d, n_head_kv %d, want %d, %d", m.NHead(), m.NHeadKV(), s.Heads, s.KVHeads)
	}
	// token_embd (also the output), the output norm, and per layer four
	// norms, q and o, k and v, and three feed-forward matrices.
	kvw := s.KVHeads * s.HeadDim()
	params := s.Embd*s.Vocab + s.Embd + s.Layers*(4*s.Embd+2*s.Embd*s.Embd+2*s.Embd*kvw+3*s.Embd*s.FF)
	if m.NParams() != uint64(params) {
		t.Errorf("llama.cpp counts %d parameters, want %d", m.NParams(), params)
	}
	decodeGreedy(t, lib, m, "hello world", 2*s.Window)

	// Fixed tokens, past the window: BOS, then normal pieces.
	tokens := []bindings.Token{1}
	for i := range s.Window + 8 {
		tokens = append(tokens, bindings.Token(gguf.MinVocab+i%(s.Vocab-gguf.MinVocab)))
	}
	windowed := decodeAll(t, lib, m, tokens)
	_, wide := loadShape(t, lib, "test-swa", s.Ctx)
	if wide.NSWA() != s.Ctx {
		t.Fatalf("n_swa %d after setting the window to %d", wide.NSWA(), s.Ctx)
	}
	full := decodeAll(t, lib, wide, tokens)
	for i := range tokens {
		d := relDiff(full[i], windowed[i])
		switch {
		case i < s.Window && d > 1e-4:
			t.Errorf("position %d, inside the window: logits differ by %.2g from the wide window's", i, d)
		case i >= s.Window && d < 1e-3:
			t.Errorf("position %d, past the window: logits differ by only %.2g from the wide window's: the window is not applied", i, d)
		}
		if i == s.Window-1 || i == s.Window {
			t.Logf("position %d: logits differ by %.2g from the wide window's", i, d)
		}
	}
}

// TestRecurrentModelRunsInLlamaCpp loads the "test-recurrent" preset, a
// mamba model, with the real llama.cpp: it must be recurrent, without a
// sliding window, and decode with finite logits.
func TestRecurrentModelRunsInLlamaCpp(t *testing.T) {
	lib := testenv.Library(t)
	s, m := loadShape(t, lib, "test-recurrent", 0)
	if m.Arch() != "mamba" || !m.IsRecurrent() || m.IsHybrid() || m.NSWA() != 0 {
		t.Fatalf("architecture %q, recurrent %v, hybrid %v, n_swa %d: want a recurrent mamba model", m.Arch(), m.IsRecurrent(), m.IsHybrid(), m.NSWA())
	}
	// token_embd (also the output), the output norm, and per layer the
	// norm, in (n_embd × 2 inner), the convolution and its bias, x (inner ×
	// rank + 2 states), dt and its bias, A, D and out (inner × n_embd).
	inner, rank, state := 2*s.Embd, (s.Embd+15)/16, 16
	params := s.Embd*s.Vocab + s.Embd + s.Layers*(s.Embd+s.Embd*2*inner+4*inner+inner+inner*(rank+2*state)+rank*inner+inner+state*inner+inner+inner*s.Embd)
	if m.NParams() != uint64(params) {
		t.Errorf("llama.cpp counts %d parameters, want %d", m.NParams(), params)
	}
	decodeGreedy(t, lib, m, "hello world", 4)
}

// TestArchShapesInEveryType writes the gemma2 and mamba presets in F16 and
// Q8_0 too (Mamba keeps its narrow tensors F32) and runs them in llama.cpp.
func TestArchShapesInEveryType(t *testing.T) {
	lib := testenv.Library(t)
	for _, name := range []string{"test-swa", "test-recurrent"} {
		for _, typ := range []string{"f16", "q8_0"} {
			t.Run(name+"/"+typ, func(t *testing.T) {
				s, err := gguf.ShapeByName(name)
				if err != nil {
					t.Fatal(err)
				}
				s.Type = typ
				path := filepath.Join(t.TempDir(), "model.gguf")
				if err := gguf.WriteRandomLlamaFile(path, s, 1); err != nil {
					t.Fatal(err)
				}
				if want, err := s.FileSize(); err != nil || fileSize(t, path) != want {
					t.Errorf("file is %d bytes, FileSize says %d (%v)", fileSize(t, path), want, err)
				}
				m, err := lib.LoadModel(path, bindings.ModelOptions{GPULayers: -1})
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				decodeGreedy(t, lib, m, "hello world", 2)
			})
		}
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestArchShapeValidate checks what each architecture refuses.
func TestArchShapeValidate(t *testing.T) {
	for _, c := range []struct {
		base string
		name string
		edit func(*gguf.Shape)
	}{
		{"test", "unknown architecture", func(s *gguf.Shape) { s.Arch = "gpt-5" }},
		{"test", "llama with a window", func(s *gguf.Shape) { s.Window = 16 }},
		{"test-swa", "gemma2 without a window", func(s *gguf.Shape) { s.Window = 0 }},
		{"test-swa", "gemma2 heads do not divide embd", func(s *gguf.Shape) { s.Heads = 5 }},
		{"test-recurrent", "mamba with heads", func(s *gguf.Shape) { s.Heads, s.KVHeads = 4, 4 }},
		{"test-recurrent", "mamba with a feed-forward", func(s *gguf.Shape) { s.FF = 128 }},
		{"test-recurrent", "mamba with a window", func(s *gguf.Shape) { s.Window = 16 }},
		{"test-recurrent", "mamba q8_0 embd not whole blocks", func(s *gguf.Shape) { s.Type, s.Embd = "q8_0", 48 }},
	} {
		s, err := gguf.ShapeByName(c.base)
		if err != nil {
			t.Fatal(err)
		}
		c.edit(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: %+v validates", c.name, s)
		} else if !strings.Contains(err.Error(), c.base) {
			t.Errorf("%s: error %q does not name the shape", c.name, err)
		}
		if err := gguf.WriteRandomLlama(io.Discard, s, 1); err == nil {
			t.Errorf("%s: WriteRandomLlama did not fail", c.name)
		}
	}
	s, _ := gguf.ShapeByName("test-swa")
	s.Arch = ""
	s.Window = 0
	if err := s.Validate(); err != nil {
		t.Errorf("an empty architecture (llama) is refused: %v", err)
	}
}
