package kvtrim_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/policies"
)

// TestPromptPoliciesEvictExactly: for every registered prompt-time policy,
// on a one-layer model (keys and values depend only on the token and its
// position), the logits after compression equal those of a fresh context
// holding only the kept tokens at their original positions; and a budget
// covering the prompt changes nothing.
func TestPromptPoliciesEvictExactly(t *testing.T) {
	m := loadModel(t, "llama-2-tiny-random.gguf")
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 4)
	for _, name := range policies.PromptNames() {
		t.Run(name, func(t *testing.T) {
			evictExactly(t, m, text, kvtrim.Compression{Policy: name, Budget: 16, Window: 4})
		})
	}
	sm := loadModel(t, "stories260K.gguf")
	prompt := strings.Repeat("Tom had a red ball. He liked to play with it in the park. ", 6)
	full, _ := complete(t, sm, prompt, 24, kvtrim.Compression{}, "")
	for _, name := range policies.PromptNames() {
		got, st := complete(t, sm, prompt, 24, kvtrim.Compression{Policy: name, Budget: 1000}, "")
		if got != full || st.EvictedCells != 0 {
			t.Errorf("%s with a budget covering the prompt: %q (%d evicted), full cache %q", name, got, st.EvictedCells, full)
		}
	}
}

// evictExactly prefills text with comp on the one-layer model m (F32
// cache, flash attention off) and checks that the budget was kept, the
// prompt's last position with it, and that the logits of one more token
// equal those of a fresh context holding only the kept tokens at their
// positions. It returns the session's stats and the prompt's length.
func evictExactly(t *testing.T, m *kvtrim.Model, text string, comp kvtrim.Compression) (kvtrim.Stats, int) {
	t.Helper()
	s, err := m.NewSession(kvtrim.SessionOptions{NCtx: 256, Threads: 1, FlashAttn: "off", CacheType: "f32", Compression: comp})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	toks, _ := s.Tokenize(text)
	if err := s.Prefill(context.Background(), toks); err != nil {
		t.Fatal(err)
	}
	kept := statePositions(t, s.Context())
	st := s.Stats()
	if len(kept) != comp.Budget || int(kept[len(kept)-1]) != len(toks)-1 || st.EvictedCells != len(toks)-comp.Budget {
		t.Fatalf("kept %v of %d tokens, stats %+v", kept, len(toks), st)
	}
	next, pos := toks[3], int32(len(toks))
	got := decodeOne(t, m, s.Context(), next, pos)
	want := keptTokensLogits(t, m, toks, kept, next, pos)
	if worst := maxAbsDiff(got, want); worst > 1e-3 {
		t.Errorf("%+v: logits after compression differ from a fresh context of the kept tokens by %g", comp, worst)
	}
	return st, len(toks)
}
