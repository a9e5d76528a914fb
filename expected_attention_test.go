package kvtrim_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
)

// TestExpectedAttentionEitherFlashAttention: Expected Attention reads the
// prompt's queries from the graph with flash attention on and off (where
// the observer would otherwise read kq_soft_max), and both keep the same
// positions of a real model's prompt (F32 cache), the budget exactly.
func TestExpectedAttentionEitherFlashAttention(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	prompt := strings.Repeat("Tom had a red ball. He liked to play with it in the park. ", 12)
	const budget = 48
	held := map[string][]int{}
	for _, fa := range []string{"on", "off"} {
		s, err := m.NewSession(kvtrim.SessionOptions{NCtx: 512, Threads: 1, FlashAttn: fa, CacheType: "f32",
			Compression: kvtrim.Compression{Policy: "expected-attention", Budget: budget}})
		if err != nil {
			t.Fatal(err)
		}
		toks, _ := s.Tokenize(prompt)
		if err := s.Prefill(context.Background(), toks); err != nil {
			t.Fatalf("-fa %s: %v", fa, err)
		}
		if st := s.Stats(); st.KeptCells != budget || st.EvictedCells != len(toks)-budget || st.Attention != "qk" {
			t.Errorf("-fa %s: kept %d, evicted %d of %d, attention %q", fa, st.KeptCells, st.EvictedCells, len(toks), st.Attention)
		}
		held[fa] = heldPositions(s.Context().Memory())
		s.Close()
	}
	if !slices.Equal(held["on"], held["off"]) {
		t.Errorf("flash attention on kept %v\noff kept %v", held["on"], held["off"])
	}
}
