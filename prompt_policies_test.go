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
			opt := kvtrim.SessionOptions{NCtx: 256, Threads: 1, FlashAttn: "off", CacheType: "f32",
				Compression: kvtrim.Compression{Policy: name, Budget: 16, Window: 4}}
			s, err := m.NewSession(opt)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			toks, _ := s.Tokenize(text)
			if err := s.Prefill(context.Background(), toks); err != nil {
				t.Fatal(err)
			}
			kept := statePositions(t, s.Context())
			if len(kept) != 16 || int(kept[len(kept)-1]) != len(toks)-1 || s.Stats().EvictedCells != len(toks)-16 {
				t.Fatalf("kept %v of %d tokens, stats %+v", kept, len(toks), s.Stats())
			}
			next, pos := toks[3], int32(len(toks))
			got := decodeOne(t, m, s.Context(), next, pos)
			want := keptTokensLogits(t, m, toks, kept, next, pos)
			if worst := maxAbsDiff(got, want); worst > 1e-3 {
				t.Errorf("logits after %s differ from a fresh context of the kept tokens by %g", name, worst)
			}
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
