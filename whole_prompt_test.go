package kvtrim_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// wholePrompt is a prompt of 28 tokens: at ratio 0.2 its budget (6) is not
// larger than SnapKV's window (32), so SnapKV and random keep it whole, as
// any of them does under a budget of 1024.
const wholePrompt = "Once upon a time, there was a small dog named Pip. Pip lived in a"

// generated is what generateAll made: the tokens' text and the session's
// stats.
type generated struct {
	text  string
	toks  []kvtrim.Token
	stats kvtrim.Stats
}

// generateAll prefills prompt in a new session with opt and generates n
// tokens greedily, past end-of-generation tokens; each is called after
// every token. The session is closed when the test ends.
func generateAll(t *testing.T, m *kvtrim.Model, opt kvtrim.SessionOptions, prompt string, n int, each func(s *kvtrim.Session)) (*kvtrim.Session, generated) {
	t.Helper()
	s, _ := prefilled(t, m, opt, prompt)
	sampler := m.Library().NewSampler(bindings.SamplerOptions{Temp: 0})
	defer sampler.Close()
	var g generated
	var out strings.Builder
	err := s.Generate(context.Background(), sampler, kvtrim.GenerateOptions{MaxTokens: n, IgnoreEOS: true},
		func(tok kvtrim.Token, piece string) error {
			out.WriteString(piece)
			g.toks = append(g.toks, tok)
			if each != nil {
				each(s)
			}
			return nil
		})
	if err != nil {
		t.Fatalf("%+v: %v", opt.Compression, err)
	}
	g.text, g.stats = out.String(), s.Stats()
	if len(g.toks) != n || g.stats.DecodeTokens != n-1 || g.stats.StopReason != "max_tokens" {
		t.Fatalf("%+v: generated %d tokens (%d decoded), stop %q; want %d", opt.Compression, len(g.toks), g.stats.DecodeTokens, g.stats.StopReason, n)
	}
	return s, g
}

// checkCacheHolds checks that the session's sequence (0, in its own
// context) holds exactly want, the positions the session accounts for, and
// that the last is Position-1. It empties the cache.
func checkCacheHolds(t *testing.T, name string, s *kvtrim.Session, want []int) {
	t.Helper()
	first, last := s.CachedPositions()
	if len(want) == 0 || first != want[0] || last != want[len(want)-1] || last != s.Position()-1 {
		t.Errorf("%s: the cache holds positions [%d, %d], the session accounts for %v and its next position is %d", name, first, last, want, s.Position())
	}
	if held := heldPositions(s.Context().Memory()); !slices.Equal(held, want) {
		t.Errorf("%s: the cache holds %v, the session accounts for %v", name, held, want)
	}
}

// TestWholePromptThenH2O: when SnapKV (or recent, or random) keeps a short
// prompt whole, at a ratio too small for it or under a budget larger than
// it, H2O as the decode policy starts from the whole prompt, scored by the
// prompt's own attention, with the decode policy's heavy and recent (not a
// split of the ratio): the prefill and the generation are an h2o session's,
// so the output, the positions kept and the evictions equal a plain h2o
// session's with the same heavy and recent, and the cache holds exactly the
// positions H2O keeps. The note still says the prompt policy kept the
// prompt whole.
func TestWholePromptThenH2O(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	const n = 60
	for _, fa := range []string{"on", "off"} {
		// 32 + 32: H2O evicts nothing of the prompt, and starts evicting
		// during the generation; 8 + 8: it evicts in the prompt too.
		for _, hr := range [][2]int{{32, 32}, {8, 8}} {
			heavy, recent := hr[0], hr[1]
			opt := func(c kvtrim.Compression) kvtrim.SessionOptions {
				return kvtrim.SessionOptions{NCtx: 256, Threads: 1, FlashAttn: fa, Compression: c}
			}
			plainS, plain := generateAll(t, m, opt(kvtrim.Compression{Policy: "h2o", Heavy: heavy, Recent: recent}), wholePrompt, n, nil)
			plainKept := plainS.KeptPositions()
			if plain.stats.PromptTokens != 28 || plain.stats.EvictedCells == 0 {
				t.Fatalf("plain h2o %d+%d: %+v", heavy, recent, plain.stats)
			}
			checkCacheHolds(t, fmt.Sprintf("-fa %s plain h2o %d+%d", fa, heavy, recent), plainS, plainKept)
			for _, c := range []struct {
				comp kvtrim.Compression
				note string
			}{
				{kvtrim.Compression{Policy: "snapkv", Ratio: 0.2, Window: 32}, "too short to compress; nothing evicted"},
				{kvtrim.Compression{Policy: "random", Ratio: 0.2, Window: 32}, "too short to compress; nothing evicted"},
				{kvtrim.Compression{Policy: "snapkv", Budget: 1024}, "budget 1024 >= prompt 28 tokens: nothing evicted"},
				{kvtrim.Compression{Policy: "recent", Budget: 1024}, "budget 1024 >= prompt 28 tokens: nothing evicted"},
			} {
				comp := c.comp
				comp.DecodePolicy, comp.Heavy, comp.Recent = "h2o", heavy, recent
				name := fmt.Sprintf("-fa %s %s (ratio %g, budget %d) then h2o %d+%d", fa, comp.Policy, comp.Ratio, comp.Budget, heavy, recent)
				var maxKept int
				s, got := generateAll(t, m, opt(comp), wholePrompt, n, func(s *kvtrim.Session) {
					maxKept = max(maxKept, len(s.KeptPositions()))
				})
				st := got.stats
				if got.text != plain.text {
					t.Errorf("%s: generated %q\nplain h2o generated %q", name, got.text, plain.text)
				}
				if kept := s.KeptPositions(); !slices.Equal(kept, plainKept) {
					t.Errorf("%s: h2o keeps %v, plain h2o %v", name, kept, plainKept)
				}
				if maxKept > heavy+recent {
					t.Errorf("%s: h2o kept up to %d positions", name, maxKept)
				}
				if st.Policy != comp.Policy || st.PromptTokens != 28 || st.KeptCells != plain.stats.KeptCells || st.EvictedCells != plain.stats.EvictedCells {
					t.Errorf("%s: stats %+v\nplain h2o %+v", name, st, plain.stats)
				}
				if !strings.Contains(st.Note, c.note) {
					t.Errorf("%s: note %q, want it to say %q", name, st.Note, c.note)
				}
				checkCacheHolds(t, name, s, s.KeptPositions())
			}
		}
	}
}

// TestWholePromptThenStreaming: when SnapKV keeps a short prompt whole, the
// kept positions are already 0..n-1 and StreamingLLM goes on from them:
// generation runs ten times past the context, the sequence stays within
// sinks + recent cells at contiguous positions, and the output equals a
// plain streaming session's (the prompt fits the window, so its prefill
// evicts nothing either).
func TestWholePromptThenStreaming(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	const sinks, recent, nctx = 4, 28, 32
	const n = 10 * nctx
	opt := func(c kvtrim.Compression) kvtrim.SessionOptions {
		c.Sinks, c.Recent, c.EvictEvery = sinks, recent, 4
		return kvtrim.SessionOptions{NCtx: nctx, Threads: 1, Compression: c}
	}
	bounded := func(name string) func(s *kvtrim.Session) {
		return func(s *kvtrim.Session) {
			if first, last := s.CachedPositions(); first != 0 || last != s.Position()-1 || last+1 > sinks+recent {
				t.Fatalf("%s: at position %d the cache holds [%d, %d], want [0, Position-1 < %d]", name, s.Position(), first, last, sinks+recent)
			}
		}
	}
	_, plain := generateAll(t, m, opt(kvtrim.Compression{Policy: "streaming"}), wholePrompt, n, bounded("plain streaming"))
	for _, c := range []struct {
		comp kvtrim.Compression
		note string
	}{
		{kvtrim.Compression{Policy: "snapkv", Ratio: 0.2, Window: 32}, "too short to compress; nothing evicted"},
		{kvtrim.Compression{Policy: "snapkv", Budget: 1024}, "budget 1024 >= prompt 28 tokens: nothing evicted"},
	} {
		comp := c.comp
		comp.DecodePolicy = "streaming"
		name := fmt.Sprintf("%s (ratio %g, budget %d) then streaming", comp.Policy, comp.Ratio, comp.Budget)
		s, got := generateAll(t, m, opt(comp), wholePrompt, n, bounded(name))
		st := got.stats
		if got.text != plain.text {
			t.Errorf("%s: generated %q\nplain streaming generated %q", name, got.text, plain.text)
		}
		if st.PromptTokens != 28 || st.KeptCells != 28 || st.EvictedCells != plain.stats.EvictedCells || st.EvictedCells < n-recent {
			t.Errorf("%s: stats %+v\nplain streaming %+v", name, st, plain.stats)
		}
		if !strings.Contains(st.Note, c.note) {
			t.Errorf("%s: note %q, want it to say %q", name, st.Note, c.note)
		}
		all := make([]int, s.Position())
		for i := range all {
			all[i] = i
		}
		checkCacheHolds(t, name, s, all)
	}
}
