package kvtrim_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// TestTOVAStaysWithinBudget: TOVA from the prompt on holds at most its
// budget of cells through a generation ten times longer, keeps the newest
// position, and reads the same attention whichever way it is observed:
// with flash attention on (queries and keys) and off (kq_soft_max) it
// keeps the same positions (F32 cache).
func TestTOVAStaysWithinBudget(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	const budget = 24
	keptBy := map[string][]int{}
	for _, fa := range []string{"on", "off"} {
		s, err := m.NewSession(kvtrim.SessionOptions{NCtx: 512, Threads: 1, FlashAttn: fa, CacheType: "f32",
			Compression: kvtrim.Compression{Policy: "tova", Budget: budget}})
		if err != nil {
			t.Fatal(err)
		}
		toks, _ := s.Tokenize(strings.Repeat("Once upon a time, there was a little girl named Lily. She loved to play outside. ", 3))
		if err := s.Prefill(context.Background(), toks); err != nil {
			t.Fatal(err)
		}
		if kept := s.KeptPositions(); len(kept) != budget || kept[budget-1] != len(toks)-1 {
			t.Fatalf("-fa %s: after the prompt TOVA keeps %v", fa, kept)
		}
		sampler := m.Library().NewSampler(bindings.SamplerOptions{Temp: 0})
		err = s.Generate(context.Background(), sampler, kvtrim.GenerateOptions{MaxTokens: 10 * budget, IgnoreEOS: true},
			func(kvtrim.Token, string) error {
				if got := s.Stats().KeptCells; got > budget {
					t.Fatalf("-fa %s: %d cells held", fa, got)
				}
				return nil
			})
		sampler.Close()
		if err != nil {
			t.Fatal(err)
		}
		st := s.Stats()
		if want := len(toks) + st.DecodeTokens - budget; st.EvictedCells != want {
			t.Errorf("-fa %s: evicted %d, want %d", fa, st.EvictedCells, want)
		}
		if hi := s.Context().Memory().SeqPosMax(0); hi != int32(len(toks)+st.DecodeTokens-1) {
			t.Errorf("-fa %s: last position %d, want %d (the newest stays)", fa, hi, len(toks)+st.DecodeTokens-1)
		}
		keptBy[fa] = s.KeptPositions()
		s.Close()
	}
	if !slices.Equal(keptBy["on"], keptBy["off"]) {
		t.Errorf("flash attention on kept %v\noff kept %v", keptBy["on"], keptBy["off"])
	}
}

// TestTOVAEvictionIsExact: on a one-layer model, after TOVA has evicted
// during the prompt and the generation, the next logits equal those of a
// fresh context holding only the kept tokens at their positions.
func TestTOVAEvictionIsExact(t *testing.T) {
	m := loadModel(t, "llama-2-tiny-random.gguf")
	for _, comp := range []kvtrim.Compression{
		{Policy: "tova", Budget: 12},
		{Policy: "tova", Ratio: 0.3, EvictEvery: 3},
		{Policy: "snapkv", Budget: 16, Window: 4, DecodePolicy: "tova"},
	} {
		opt := kvtrim.SessionOptions{NCtx: 256, Threads: 1, FlashAttn: "off", CacheType: "f32", Compression: comp}
		s, err := m.NewSession(opt)
		if err != nil {
			t.Fatal(err)
		}
		toks, _ := s.Tokenize(strings.Repeat("The quick brown fox jumps over the lazy dog. ", 3))
		if err := s.Prefill(context.Background(), toks); err != nil {
			t.Fatal(err)
		}
		sampler := m.Library().NewSampler(bindings.SamplerOptions{Temp: 0})
		all := slices.Clone(toks)
		err = s.Generate(context.Background(), sampler, kvtrim.GenerateOptions{MaxTokens: 10, IgnoreEOS: true},
			func(tok kvtrim.Token, _ string) error { all = append(all, tok); return nil })
		sampler.Close()
		if err != nil {
			t.Fatal(err)
		}
		last, pos := all[len(all)-1], int32(len(all)-1)
		got := decodeOne(t, m, s.Context(), last, pos)
		held := heldPositions(s.Context().Memory()) // empties it
		held = held[:len(held)-1]                   // less the token just decoded
		if st := s.Stats(); st.EvictedCells == 0 || len(held) != st.KeptCells {
			t.Fatalf("%+v: evicted %d, holds %d positions, stats say %d", comp, st.EvictedCells, len(held), st.KeptCells)
		}
		want := keptTokensLogits(t, m, all, held, last, pos)
		if worst := maxAbsDiff(got, want); worst > 1e-3 {
			t.Errorf("%+v: logits after evictions differ from a fresh context of the kept tokens by %g", comp, worst)
		}
		s.Close()
	}
}

// TestTOVAFullBudgetIsTheFullCache: with a budget covering the prompt and
// the generation, TOVA evicts nothing and generates what the full cache
// does, token for token.
func TestTOVAFullBudgetIsTheFullCache(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	prompt := "Tom had a red ball. He liked to play with it in the park. One day"
	full, _ := complete(t, m, prompt, 40, kvtrim.Compression{}, "auto")
	for _, comp := range []kvtrim.Compression{
		{Policy: "tova", Budget: 200},
		{Policy: "snapkv", Budget: 200, DecodePolicy: "tova"},
	} {
		got, st := complete(t, m, prompt, 40, comp, "auto")
		if got != full || st.EvictedCells != 0 {
			t.Errorf("%+v: evicted %d and generated %q, the full cache %q", comp, st.EvictedCells, got, full)
		}
	}
}
