package server

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
)

// TestPromptCache: a slot that gives up a conversation for an unrelated
// request saves it to the prompt cache (--cache-ram), and the
// conversation's next turn, on whichever slot it lands, loads it back and
// decodes only its new tokens, answering exactly as a new session given
// the whole prompt. With --cache-ram 0 the turn decodes everything again.
func TestPromptCache(t *testing.T) {
	story := story(t)
	for _, tc := range []struct {
		parallel, cacheMiB int
	}{{1, 64}, {2, 64}, {2, 0}} {
		t.Run(fmt.Sprintf("np%d-cram%d", tc.parallel, tc.cacheMiB), func(t *testing.T) {
			cfg := testConfig()
			cfg.Parallel, cfg.CtxSize = tc.parallel, 1024*tc.parallel
			cfg.PromptReuse.CacheMiB = tc.cacheMiB
			ts := startServer(t, cfg)
			decoded, cached := 0, 0
			ask := func(prompt string) completion {
				var c completion
				ts.post("/completion", fmt.Sprintf(`{"prompt":%s,"n_predict":8,"temperature":0,"return_tokens":true}`, jsonString(prompt)), 200, &c)
				decoded, cached = decoded+c.Timings.PromptN, cached+c.Timings.CacheN
				return c
			}
			defer func() {
				// /metrics counts prompt tokens as llama-server does.
				m := string(ts.get("/metrics", 200, nil))
				for _, want := range []string{fmt.Sprintf("llamacpp:prompt_tokens_total %d\n", decoded), fmt.Sprintf("llamacpp:prompt_tokens_cached_total %d\n", cached)} {
					if !strings.Contains(m, want) {
						t.Errorf("metrics lack %q", want)
					}
				}
			}()
			first := ask(story)
			// Unrelated prompts take every slot, the conversation's last.
			for _, name := range []string{"Lily", "Max"}[:tc.parallel] {
				ask(name + " had two cats. They liked to sleep in the sun all day long.")
			}
			next := story + first.Content + " Then they went home."
			c := ask(next)
			if tc.cacheMiB == 0 {
				if c.Timings.CacheN >= first.TokensEvaluated {
					t.Errorf("no prompt cache: cache_n %d, yet the conversation's slot was taken", c.Timings.CacheN)
				}
				return
			}
			if c.Timings.CacheN < first.TokensEvaluated || c.Timings.CacheN+c.Timings.PromptN != c.TokensEvaluated {
				t.Errorf("next turn: cache_n %d, prompt_n %d of %d tokens; the first turn's prompt had %d",
					c.Timings.CacheN, c.Timings.PromptN, c.TokensEvaluated, first.TokensEvaluated)
			}
			if want, _ := direct(t, ts.model, 1024, next, 8, kvtrim.Compression{}); !slices.Equal(c.Tokens, want) {
				t.Errorf("next turn %v, a new session %v", c.Tokens, want)
			}
		})
	}
}

// TestPromptCacheCompressed: a SnapKV conversation comes back from the
// prompt cache compressed: its next turn keeps the kept cells and evicts
// nothing more.
func TestPromptCacheCompressed(t *testing.T) {
	story := story(t)
	ts := startServer(t, testConfig())
	const kv = `"kvtrim":{"policy":"snapkv","budget":64,"window":8}`
	ask := func(prompt string) completion {
		var c completion
		ts.post("/completion", fmt.Sprintf(`{"prompt":%s,"n_predict":8,"temperature":0,%s}`, jsonString(prompt), kv), 200, &c)
		return c
	}
	first := ask(story)
	ask("Lily had two cats. They liked to sleep in the sun, all day long.")
	c := ask(story + first.Content + " Then they went home.")
	if c.Timings.CacheN < first.TokensEvaluated || c.Kvtrim == nil || c.Kvtrim.EvictedCells != 0 ||
		c.Kvtrim.KeptCells > 64+first.TokensPredicted+c.Timings.PromptN {
		t.Errorf("next turn: cache_n %d (first prompt %d tokens), kvtrim %+v", c.Timings.CacheN, first.TokensEvaluated, c.Kvtrim)
	}
}

// TestPromptCacheBounds: the cache drops its oldest entries past its byte
// bound, and an entry that another one holds all of.
func TestPromptCacheBounds(t *testing.T) {
	model := loadModel(t)
	s, err := model.NewSession(kvtrim.SessionOptions{NCtx: 256, NBatch: 256, NUbatch: 256, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	snapshot := func(tokens []kvtrim.Token) *kvtrim.Snapshot {
		s.Reset()
		if err := s.Prefill(t.Context(), tokens); err != nil {
			t.Fatal(err)
		}
		sn, err := s.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		return sn
	}
	a := []kvtrim.Token{1, 10, 11, 12, 13, 14, 15, 16}
	b := []kvtrim.Token{1, 20, 21, 22, 23, 24, 25, 26}
	snA, snB := snapshot(a), snapshot(b)
	pc := &promptCache{limitBytes: int64(snA.Bytes() + snB.Bytes()), limitTokens: 256}
	pc.put(a[:4], snapshot(a[:4]))
	pc.put(a, snA) // holds all of a[:4]: replaces it
	if n, _ := pc.size(); n != 1 || !pc.holds(kvtrim.Compression{}, a[:6]) {
		t.Fatalf("after a prefix and its whole: %d entries", n)
	}
	pc.put(b, snB)
	pc.put(slices.Concat(b[:1], a[1:5], b[5:]), snapshot(slices.Concat(b[:1], a[1:5], b[5:]))) // past the bound: a goes
	if pc.holds(kvtrim.Compression{}, a) || !pc.holds(kvtrim.Compression{}, b) {
		t.Errorf("past the byte bound the oldest entry should go")
	}
	// b continues: taken out, and only once; a prompt sharing a quarter of
	// no entry finds nothing.
	prompt := append(slices.Clone(b), 30, 31)
	if e := pc.take(kvtrim.Compression{}, prompt, 0, 0); e == nil || !slices.Equal(e.tokens, b) {
		t.Fatalf("take %v: %v", prompt, e)
	}
	if e := pc.take(kvtrim.Compression{}, prompt, 0, 0); e != nil && slices.Equal(e.tokens, b) {
		t.Errorf("an entry was taken twice")
	}
	if e := pc.take(kvtrim.Compression{}, []kvtrim.Token{1, 40, 41, 42}, 0, 0); e != nil {
		t.Errorf("an unrelated prompt took %v", e.tokens)
	}
	// A compressed request does not take a full-cache entry.
	pc.put(b, snB)
	if e := pc.take(kvtrim.Compression{Policy: kvtrim.PolicySnapKV, Budget: 4, Window: 2}, prompt, 0, 0); e != nil {
		t.Errorf("a snapkv request took a full-cache entry")
	}
}
