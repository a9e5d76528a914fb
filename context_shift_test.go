package kvtrim_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// TestContextShift: with GenerateOptions.ContextShift a generation that
// fills the cells drops half of what follows the kept tokens, shifts the
// rest down and goes on, as llama-server's --context-shift. What the cache
// then holds must be the tokens that stay, at positions 0..n-1: the next
// logits equal a fresh context's prefilled with them (f32 cache).
func TestContextShift(t *testing.T) {
	m := loadModel(t, "llama-2-tiny-random.gguf") // one layer: a cell's K and V are its token's alone
	s, err := m.NewSession(kvtrim.SessionOptions{NCtx: 256, Threads: 1, FlashAttn: "off", CacheType: "f32"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	text, err := os.ReadFile(filepath.Join("testdata", "moby-dick-ch1-35.txt"))
	if err != nil {
		t.Fatal(err)
	}
	prompt, _ := s.Tokenize(string(text[:600])) // no repeats, so that each cell's token matters
	prompt = prompt[:min(len(prompt), 120)]
	if err := s.Prefill(context.Background(), prompt); err != nil {
		t.Fatal(err)
	}
	nCtx := s.NCtx()
	const keep = 5
	held := append([]kvtrim.Token(nil), prompt...)
	shifts := 0
	var emitted []kvtrim.Token
	sampler := m.Library().NewSampler(bindings.SamplerOptions{Temp: 0})
	defer sampler.Close()
	n := nCtx + 40 // past the context twice or so
	err = s.Generate(context.Background(), sampler, kvtrim.GenerateOptions{MaxTokens: n, IgnoreEOS: true, ContextShift: &kvtrim.ContextShift{Keep: keep}},
		func(tok kvtrim.Token, _ string) error {
			emitted = append(emitted, tok)
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	// What the cache should hold: every decoded token (all but the last
	// emitted), with llama-server's shifts applied before each decode.
	for _, tok := range emitted[:len(emitted)-1] {
		if len(held)+1 >= nCtx {
			discard := (len(held) - keep) / 2
			held = append(held[:keep], held[keep+discard:]...)
			shifts++
		}
		held = append(held, tok)
	}
	st := s.Stats()
	if len(emitted) != n || st.ContextShifts != shifts || shifts == 0 || s.Held() != len(held) || s.Position() != len(held) {
		t.Fatalf("%d tokens, %d shifts (want %d), held %d at position %d, want %d", len(emitted), st.ContextShifts, shifts, s.Held(), s.Position(), len(held))
	}
	if first, last := s.CachedPositions(); first != 0 || last != len(held)-1 {
		t.Fatalf("the cache holds positions [%d, %d], want [0, %d]", first, last, len(held)-1)
	}
	next := prompt[3]
	got := decodeOne(t, m, s.Context(), next, int32(len(held)))
	positions := make([]int, len(held))
	for i := range positions {
		positions[i] = i
	}
	want := keptTokensLogits(t, m, held, positions, next, int32(len(held)))
	// The check must see one cell's token: the same cells with another
	// token at keep move the logits by well over the tolerance.
	const tolerance = 1e-5
	alt := append([]kvtrim.Token(nil), held...)
	alt[keep] = prompt[keep]
	if moved := maxAbsDiff(want, keptTokensLogits(t, m, alt, positions, next, int32(len(held)))); moved < 10*tolerance {
		t.Fatalf("another token at %d moves the logits by only %g: the check cannot tell", keep, moved)
	}
	if worst := maxAbsDiff(got, want); worst > tolerance {
		t.Errorf("logits after %d context shifts differ from a fresh context of the tokens that stay by %g", shifts, worst)
	}
}
