package kvtrim_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// TestH2OStaysWithinBudget: over a generation of 20 times the budget, the
// sequence never holds more than heavy + recent cells (one more while a new
// token is scored), the recent window is always kept, and the cell map
// agrees with llama.cpp's positions after every step.
func TestH2OStaysWithinBudget(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	const heavy, recent = 8, 8
	for _, fa := range []string{"on", "off"} {
		s, err := m.NewSession(kvtrim.SessionOptions{NCtx: 512, Threads: 1, FlashAttn: fa,
			Compression: kvtrim.Compression{Policy: "h2o", Heavy: heavy, Recent: recent}})
		if err != nil {
			t.Fatal(err)
		}
		toks, _ := s.Tokenize("Once upon a time, there was a little girl named Lily. She loved to play outside.")
		if err := s.Prefill(context.Background(), toks); err != nil {
			t.Fatal(err)
		}
		sampler := m.Library().NewSampler(bindings.SamplerOptions{Temp: 0})
		mem := s.Context().Memory()
		n := 0
		err = s.Generate(context.Background(), sampler, kvtrim.GenerateOptions{MaxTokens: 20 * (heavy + recent), IgnoreEOS: true},
			func(kvtrim.Token, string) error {
				n++
				if got := s.Stats().KeptCells; got > heavy+recent {
					t.Fatalf("-fa %s: %d cells after %d tokens", fa, got, n)
				}
				return nil
			})
		sampler.Close()
		if err != nil {
			t.Fatal(err)
		}
		st := s.Stats()
		if st.EvictedCells != len(toks)+st.DecodeTokens-(heavy+recent) {
			t.Errorf("-fa %s: evicted %d of %d prompt + %d decoded tokens", fa, st.EvictedCells, len(toks), st.DecodeTokens)
		}
		if hi := mem.SeqPosMax(0); hi != int32(len(toks)+st.DecodeTokens-1) {
			t.Errorf("-fa %s: last position %d, want %d (h2o never evicts the recent window)", fa, hi, len(toks)+st.DecodeTokens-1)
		}
		s.Close()
	}
}

// TestH2OEvictionIsExact: on a one-layer model (keys and values depend
// only on the token and its position), after H2O has evicted during the
// prompt and during generation, the next logits equal those of a fresh
// context holding only the kept tokens at their original positions (decoded
// contiguously and moved there with seq_add; F32 cache, flash attention off).
func TestH2OEvictionIsExact(t *testing.T) {
	m := loadModel(t, "llama-2-tiny-random.gguf")
	opt := kvtrim.SessionOptions{NCtx: 256, Threads: 1, FlashAttn: "off", CacheType: "f32",
		Compression: kvtrim.Compression{Policy: "h2o", Heavy: 6, Recent: 6}}
	s, err := m.NewSession(opt)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	toks, _ := s.Tokenize(strings.Repeat("The quick brown fox jumps over the lazy dog. ", 3))
	if err := s.Prefill(context.Background(), toks); err != nil {
		t.Fatal(err)
	}
	sampler := m.Library().NewSampler(bindings.SamplerOptions{Temp: 0})
	defer sampler.Close()
	all := append([]kvtrim.Token(nil), toks...)
	err = s.Generate(context.Background(), sampler, kvtrim.GenerateOptions{MaxTokens: 10, IgnoreEOS: true},
		func(tok kvtrim.Token, _ string) error { all = append(all, tok); return nil })
	if err != nil {
		t.Fatal(err)
	}
	// The last sampled token is not decoded yet: decode it in both.
	last := all[len(all)-1]
	pos := int32(len(all) - 1)
	kept := s.KeptPositions()
	if len(kept) != 12 {
		t.Fatalf("kept %v", kept)
	}
	got := decodeOne(t, m, s.Context(), last, pos)
	want := keptTokensLogits(t, m, all, kept, last, pos)
	worst := maxAbsDiff(got, want)
	if worst > 1e-3 {
		t.Errorf("logits after h2o evictions differ from a fresh context of the kept tokens by %g", worst)
	}
	t.Logf("%d tokens seen, kept %v, logits within %.2g", len(all)-1, kept, worst)
}

// keptTokensLogits is the logits of tok at pos in a fresh context (F32
// cache, flash attention off) holding only the tokens at the kept
// positions, each at its own position: decoded contiguously, then moved
// there with seq_add.
func keptTokensLogits[P int | int32](t *testing.T, m *kvtrim.Model, tokens []kvtrim.Token, kept []P, tok kvtrim.Token, pos int32) []float32 {
	t.Helper()
	fresh, err := m.NewSession(kvtrim.SessionOptions{NCtx: 256, Threads: 1, FlashAttn: "off", CacheType: "f32"})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	keptToks := make([]kvtrim.Token, len(kept))
	for i, p := range kept {
		keptToks[i] = tokens[p]
	}
	if err := fresh.Prefill(context.Background(), keptToks); err != nil {
		t.Fatal(err)
	}
	mem := fresh.Context().Memory()
	for i := len(kept) - 1; i >= 0; i-- {
		mem.SeqAdd(0, int32(i), int32(i+1), int32(kept[i])-int32(i))
	}
	return decodeOne(t, m, fresh.Context(), tok, pos)
}

func decodeOne(t *testing.T, m *kvtrim.Model, ctx *bindings.Context, tok kvtrim.Token, pos int32) []float32 {
	t.Helper()
	b := m.Library().NewBatch(1, 1)
	defer b.Close()
	b.Add(tok, pos, []bindings.SeqID{0}, true)
	if err := ctx.Decode(b); err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), ctx.Logits(-1)...)
}

// TestSnapKVThenH2O: SnapKV compresses the prompt, H2O starts from the kept
// positions (original positions, scored by the window's attention) and keeps
// the sequence within heavy + recent cells while generating. Both attention
// paths choose the same positions (F32 cache), which also shows that the
// keys of the moved cells are read anew: with stale copies the
// flash-attention path, which scores from those copies, chose differently.
func TestSnapKVThenH2O(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	prompt := strings.Repeat("Tom had a red ball. He liked to play with it in the park. ", 20)
	const heavy, recent = 16, 24
	keptBy := map[string][]int{}
	for _, fa := range []string{"on", "off"} {
		comp := kvtrim.Compression{Policy: "snapkv", Budget: 64, Window: 16, DecodePolicy: "h2o", Heavy: heavy, Recent: recent}
		s, err := m.NewSession(kvtrim.SessionOptions{NCtx: 128, Threads: 1, FlashAttn: fa, CacheType: "f32", Compression: comp})
		if err != nil {
			t.Fatal(err)
		}
		toks, _ := s.Tokenize(prompt)
		if err := s.Prefill(context.Background(), toks); err != nil {
			t.Fatal(err)
		}
		if kept := s.KeptPositions(); len(kept) != heavy+recent || kept[len(kept)-1] != len(toks)-1 {
			t.Fatalf("-fa %s: after the prompt H2O keeps %v", fa, kept)
		}
		// The stats count what the cache holds after both policies.
		if st := s.Stats(); st.KeptCells != heavy+recent || st.EvictedCells != len(toks)-heavy-recent || st.KVBytesAfter*int64(len(toks)) != st.KVBytesBefore*int64(heavy+recent) {
			t.Errorf("-fa %s: stats kept %d, evicted %d, bytes %d -> %d for %d prompt tokens and %d cells held",
				fa, st.KeptCells, st.EvictedCells, st.KVBytesBefore, st.KVBytesAfter, len(toks), heavy+recent)
		}
		sampler := m.Library().NewSampler(bindings.SamplerOptions{Temp: 0})
		err = s.Generate(context.Background(), sampler, kvtrim.GenerateOptions{MaxTokens: 200, IgnoreEOS: true},
			func(kvtrim.Token, string) error {
				if n := len(s.KeptPositions()); n > heavy+recent {
					t.Fatalf("-fa %s: %d cells kept", fa, n)
				}
				return nil
			})
		sampler.Close()
		if err != nil {
			t.Fatal(err)
		}
		if hi := s.Context().Memory().SeqPosMax(0); hi != int32(len(toks)+198) {
			t.Errorf("-fa %s: last position %d, want %d", fa, hi, len(toks)+198)
		}
		keptBy[fa] = s.KeptPositions()
		s.Close()
	}
	if !slices.Equal(keptBy["on"], keptBy["off"]) {
		t.Errorf("flash attention on kept %v\noff kept %v", keptBy["on"], keptBy["off"])
	}
}

// TestResetIsANewSession: after Reset, a session with a policy that keeps
// state while generating (H2O, StreamingLLM) gives the same output and
// stats for a prompt as a new session does.
func TestResetIsANewSession(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	for _, comp := range []kvtrim.Compression{
		{Policy: "h2o", Heavy: 16, Recent: 16},
		{Policy: "streaming", Sinks: 4, Recent: 28, EvictEvery: 4},
	} {
		s, err := m.NewSession(kvtrim.SessionOptions{NCtx: 256, Threads: 1, Compression: comp})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		run := func(prompt string) (string, kvtrim.Stats) { return promptAndGenerate(t, s, m, prompt, 60) }
		first, st1 := run("Tom had a red ball. He liked to play with it in the park.")
		s.Reset()
		if st := s.Stats(); st.PromptTokens != 0 || st.EvictedCells != 0 || st.DecodeTokens != 0 {
			t.Errorf("%s: stats after Reset: %+v", comp.Policy, st)
		}
		run("Lily saw a big dog.")
		s.Reset()
		again, st2 := run("Tom had a red ball. He liked to play with it in the park.")
		if again != first || st2.EvictedCells != st1.EvictedCells || st2.DecodeTokens != st1.DecodeTokens || st1.EvictedCells == 0 {
			t.Errorf("%s: after Reset %q (%d evicted), new session %q (%d evicted)", comp.Policy, again, st2.EvictedCells, first, st1.EvictedCells)
		}
	}
}
