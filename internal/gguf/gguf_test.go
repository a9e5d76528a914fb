package gguf_test

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/internal/gguf"
	"github.com/kvtrim/kvtrim/internal/testenv"
)

// run is what one generated model did in llama.cpp.
type run struct {
	prompt []float32 // logits of every prompt token, one row per token
	vocab  int
}

// loadAndRun writes the "test" shape with the given weight type and seed,
// loads it with the real llama.cpp, checks that its shape and vocabulary
// round-trip, and decodes a prompt and a few greedy tokens, checking that
// every logit is finite.
func loadAndRun(t *testing.T, lib *bindings.Library, typ string, seed uint64) run {
	t.Helper()
	s, err := gguf.ShapeByName("test")
	if err != nil {
		t.Fatal(err)
	}
	s.Type = typ
	path := filepath.Join(t.TempDir(), "random-"+typ+".gguf")
	if err := gguf.WriteRandomLlamaFile(path, s, seed); err != nil {
		t.Fatal(err)
	}
	m, err := lib.LoadModel(path, bindings.ModelOptions{GPULayers: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)

	got := []int{m.NLayer(), m.NHead(), m.NHeadKV(), m.NEmbd(), m.NCtxTrain(), m.Vocab().NTokens()}
	want := []int{s.Layers, s.Heads, s.KVHeads, s.Embd, s.Ctx, s.Vocab}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("n_layer, n_head, n_head_kv, n_embd, n_ctx_train, n_vocab = %v, want %v", got, want)
		}
	}
	if m.Arch() != "llama" || m.Meta("general.name") != "kvtrim random test" {
		t.Errorf("arch %q, name %q", m.Arch(), m.Meta("general.name"))
	}
	// Every matrix and norm: 2 of n_embd×n_vocab, and per layer 2 norms,
	// q and o (n_embd²), k and v (n_embd × kv width), three of n_embd×ff.
	kvw := s.KVHeads * s.HeadDim()
	params := 2*s.Embd*s.Vocab + s.Embd + s.Layers*(2*s.Embd+2*s.Embd*s.Embd+2*s.Embd*kvw+3*s.Embd*s.FF)
	if m.NParams() != uint64(params) {
		t.Errorf("llama.cpp counts %d parameters, want %d", m.NParams(), params)
	}

	v := m.Vocab()
	if v.BOS() != 1 || v.EOS() != 2 || !v.IsEOG(2) || !v.AddBOS() {
		t.Errorf("bos %d, eos %d (end of generation: %v), add bos %v", v.BOS(), v.EOS(), v.IsEOG(2), v.AddBOS())
	}
	tokens, err := v.Tokenize("hello world", true, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) < 2 || tokens[0] != 1 {
		t.Fatalf("tokens %v: want BOS and the text", tokens)
	}
	for _, tok := range tokens[1:] {
		if tok < gguf.MinVocab || int(tok) >= s.Vocab {
			t.Errorf("tokens %v: %d is not a normal piece (the letters and spaces are in the vocabulary)", tokens, tok)
		}
	}
	if text := v.Detokenize(tokens, true, false); strings.TrimSpace(text) != "hello world" {
		t.Errorf("tokens %v detokenize to %q", tokens, text)
	}

	ctx, err := m.NewContext(bindings.ContextOptions{NCtx: 64, NBatch: 64, Threads: 1, NoPerf: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctx.Close)
	batch := lib.NewBatch(64, 1)
	t.Cleanup(batch.Close)
	for i, tok := range tokens {
		batch.Add(tok, bindings.Pos(i), []bindings.SeqID{0}, true)
	}
	if err := ctx.Decode(batch); err != nil {
		t.Fatal(err)
	}
	r := run{vocab: s.Vocab}
	for i := range tokens {
		lg := ctx.Logits(i)
		checkLogits(t, lg, s.Vocab, i)
		r.prompt = append(r.prompt, lg...)
	}
	// A few greedy tokens, one batch each.
	next := argmax(ctx.Logits(len(tokens) - 1))
	for i := range 4 {
		batch.Clear()
		batch.Add(next, bindings.Pos(len(tokens)+i), []bindings.SeqID{0}, true)
		if err := ctx.Decode(batch); err != nil {
			t.Fatal(err)
		}
		lg := ctx.Logits(0)
		checkLogits(t, lg, s.Vocab, len(tokens)+i)
		next = argmax(lg)
	}
	return r
}

// checkLogits fails unless lg holds n finite logits that are not all equal.
func checkLogits(t *testing.T, lg []float32, n, pos int) {
	t.Helper()
	if len(lg) != n {
		t.Fatalf("position %d: %d logits, want %d", pos, len(lg), n)
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, x := range lg {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatalf("position %d: logit %d is %v", pos, i, x)
		}
		lo, hi = min(lo, float64(x)), max(hi, float64(x))
	}
	if hi-lo < 1e-3 {
		t.Fatalf("position %d: logits all within %g: the model is degenerate", pos, hi-lo)
	}
}

func argmax(lg []float32) bindings.Token {
	best := 0
	for i, x := range lg {
		if x > lg[best] {
			best = i
		}
	}
	return bindings.Token(best)
}

// relDiff is ‖a−b‖ over ‖a−mean(a)‖: 0 for equal logits, about √2 for
// unrelated ones.
func relDiff(a, b []float32) float64 {
	var mean float64
	for _, x := range a {
		mean += float64(x)
	}
	mean /= float64(len(a))
	var d, n float64
	for i := range a {
		d += (float64(a[i]) - float64(b[i])) * (float64(a[i]) - float64(b[i]))
		n += (float64(a[i]) - mean) * (float64(a[i]) - mean)
	}
	return math.Sqrt(d / n)
}

// TestRandomLlamaRunsInLlamaCpp loads the generated model in each weight
// type with the real llama.cpp and decodes with it. The three types share
// one set of random weights, so their logits must agree as closely as the
// encodings allow: this checks the F16 and Q8_0 encodings as llama.cpp
// reads them, not only as this package does.
func TestRandomLlamaRunsInLlamaCpp(t *testing.T) {
	lib := testenv.Library(t)
	runs := map[string]run{}
	for _, typ := range []string{"f32", "f16", "q8_0"} {
		t.Run(typ, func(t *testing.T) { runs[typ] = loadAndRun(t, lib, typ, 42) })
	}
	if t.Failed() {
		return
	}
	f32 := runs["f32"].prompt
	for typ, limit := range map[string]float64{"f16": 0.005, "q8_0": 0.05} {
		d := relDiff(f32, runs[typ].prompt)
		t.Logf("%s logits differ from f32's by %.4f", typ, d)
		if d > limit {
			t.Errorf("%s logits differ from f32's by %.4f (over %g): the encoding is wrong", typ, d, limit)
		}
	}
	var other run
	t.Run("other seed", func(t *testing.T) { other = loadAndRun(t, lib, "f32", 43) })
	if other.prompt != nil {
		d := relDiff(f32, other.prompt)
		t.Logf("seed 43's logits differ from seed 42's by %.4f", d)
		if d < 0.5 {
			t.Errorf("seeds 42 and 43 give logits only %.4f apart: the seed is not used", d)
		}
	}
}
