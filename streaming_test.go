package kvtrim_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// TestStreamingStaysBounded: generating 20 times the cache's size under
// StreamingLLM, the sequence never holds more than sinks + recent cells, its
// positions stay contiguous from 0 (the re-assignment), and generation runs
// far past the model's training context without the cache filling up.
func TestStreamingStaysBounded(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	const sinks, recent = 4, 60
	comp := kvtrim.Compression{Policy: "streaming", Sinks: sinks, Recent: recent, EvictEvery: 8}
	s, err := m.NewSession(kvtrim.SessionOptions{NCtx: 64, Threads: 1, Compression: comp})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	toks, _ := s.Tokenize("Once upon a time")
	if err := s.Prefill(context.Background(), toks); err != nil {
		t.Fatal(err)
	}
	sampler := m.Library().NewSampler(bindings.SamplerOptions{Temp: 0})
	defer sampler.Close()
	mem := s.Context().Memory()
	n := 0
	err = s.Generate(context.Background(), sampler, kvtrim.GenerateOptions{MaxTokens: 20 * (sinks + recent), IgnoreEOS: true},
		func(kvtrim.Token, string) error {
			n++
			lo, hi := mem.SeqPosMin(0), mem.SeqPosMax(0)
			if lo != 0 || hi+1 > sinks+recent {
				t.Fatalf("after %d tokens the cache holds positions [%d, %d], want [0, <%d]", n, lo, hi, sinks+recent)
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.StopReason != "max_tokens" || n != 20*(sinks+recent) || st.EvictedCells < n-recent {
		t.Errorf("generated %d, stop %q, evicted %d", n, st.StopReason, st.EvictedCells)
	}
}

// TestStreamingShiftIsExact: on a one-layer model, where a token's keys and
// values depend only on the token and its position, a prompt longer than
// the cache prefilled under StreamingLLM leaves logits equal to those of a
// fresh context that decodes only the kept tokens at their re-assigned
// positions 0..k-1 (F32 cache: a shifted F16 key is rounded again).
func TestStreamingShiftIsExact(t *testing.T) {
	m := loadModel(t, "llama-2-tiny-random.gguf")
	prompt := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 12)
	const sinks, recent = 4, 40
	comp := kvtrim.Compression{Policy: "streaming", Sinks: sinks, Recent: recent, EvictEvery: 5}
	s, toks := prefilled(t, m, kvtrim.SessionOptions{NCtx: 64, NBatch: 64, Threads: 1, CacheType: "f32", FlashAttn: "off", Compression: comp}, prompt)
	st := s.Stats()
	k := st.KeptCells
	if k > sinks+recent || st.EvictedCells != len(toks)-k {
		t.Fatalf("kept %d, evicted %d of %d", k, st.EvictedCells, len(toks))
	}
	got := append([]float32(nil), s.Context().Logits(-1)...)

	fresh, err := m.NewSession(kvtrim.SessionOptions{NCtx: 64, NBatch: 64, Threads: 1, CacheType: "f32", FlashAttn: "off"})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	kept := append(append([]kvtrim.Token(nil), toks[:sinks]...), toks[len(toks)-(k-sinks):]...)
	if err := fresh.Prefill(context.Background(), kept); err != nil {
		t.Fatal(err)
	}
	want := fresh.Context().Logits(-1)
	worst := maxAbsDiff(got, want)
	if worst > 1e-3 {
		t.Errorf("logits after streaming eviction and shift differ from a fresh decode of the kept tokens by %g", worst)
	}
	t.Logf("%d prompt tokens, kept %d (sinks %d), logits within %.2g", len(toks), k, sinks, worst)
}

// TestSnapKVThenStreamingIsExact: on the one-layer model, after SnapKV and
// the re-assignment of the kept positions to 0..k-1, the logits equal those
// of a fresh context that decodes only the kept tokens at 0..k-1.
func TestSnapKVThenStreamingIsExact(t *testing.T) {
	m := loadModel(t, "llama-2-tiny-random.gguf")
	prompt := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 6)
	comp := kvtrim.Compression{Policy: "snapkv", Budget: 24, Window: 8, DecodePolicy: "streaming", Sinks: 2, Recent: 40}
	opt := kvtrim.SessionOptions{NCtx: 64, Threads: 1, CacheType: "f32", FlashAttn: "off", Compression: comp}
	s, toks := prefilled(t, m, opt, prompt)
	got := append([]float32(nil), s.Context().Logits(-1)...)
	kept := s.Stats().KeptCells
	if kept != 24 {
		t.Fatalf("kept %d cells", kept)
	}
	// The kept tokens: the same SnapKV without the decode policy keeps the
	// same positions and leaves them unshifted, so they can be read back.
	plain, err := m.NewSession(kvtrim.SessionOptions{NCtx: 64, Threads: 1, CacheType: "f32", FlashAttn: "off",
		Compression: kvtrim.Compression{Policy: "snapkv", Budget: 24, Window: 8}})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := plain.Prefill(context.Background(), toks); err != nil {
		t.Fatal(err)
	}
	positions := heldPositions(plain.Context().Memory())
	if len(positions) != 24 {
		t.Fatalf("plain SnapKV holds %d positions", len(positions))
	}
	keptToks := make([]kvtrim.Token, len(positions))
	for i, p := range positions {
		keptToks[i] = toks[p]
	}
	fresh, err := m.NewSession(kvtrim.SessionOptions{NCtx: 64, Threads: 1, CacheType: "f32", FlashAttn: "off"})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := fresh.Prefill(context.Background(), keptToks); err != nil {
		t.Fatal(err)
	}
	want := fresh.Context().Logits(-1)
	worst := maxAbsDiff(got, want)
	if worst > 1e-3 {
		t.Errorf("logits after SnapKV and re-assignment differ from a fresh decode of the kept tokens by %g", worst)
	}
	t.Logf("kept %v, logits within %.2g", positions, worst)
}

// heldPositions lists the positions sequence 0 holds, ascending, by taking
// pos_max and removing it until the sequence is empty: llama.cpp has no
// call that lists them. The cache is empty afterwards.
func heldPositions(mem *bindings.Memory) []int {
	var held []int
	for {
		hi := mem.SeqPosMax(0)
		if hi < 0 {
			break
		}
		held = append([]int{int(hi)}, held...)
		mem.SeqRm(0, hi, hi+1)
	}
	return held
}

// TestStreamingWindowLargerThanContext: a window that cannot fit is an
// error naming both sizes (the context is freed first, and the error must
// not read it afterwards).
func TestStreamingWindowLargerThanContext(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	_, err := m.NewSession(kvtrim.SessionOptions{NCtx: 256, Threads: 1, Compression: kvtrim.Compression{Policy: "streaming", Sinks: 4, Recent: 400}})
	if err == nil || !strings.Contains(err.Error(), "recent 400") || !strings.Contains(err.Error(), "256 cells") {
		t.Fatalf("sinks 4 + recent 400 in 256 cells: %v", err)
	}
}
