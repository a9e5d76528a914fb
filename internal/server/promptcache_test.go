package server

import (
	"fmt"
	"os"
	"runtime"
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
	s := cacheSession(t, 256)
	a := []kvtrim.Token{1, 10, 11, 12, 13, 14, 15, 16}
	b := []kvtrim.Token{1, 20, 21, 22, 23, 24, 25, 26}
	pc := &promptCache{limitTokens: 256}
	save := func(tokens []kvtrim.Token) {
		t.Helper()
		s.Reset()
		if err := s.Prefill(t.Context(), tokens); err != nil {
			t.Fatal(err)
		}
		if err := pc.save(s, tokens); err != nil {
			t.Fatal(err)
		}
	}
	save(a)
	pc.limitBytes = 2 * pc.bytes() // a and b, which have as many tokens
	defer pc.clear()
	save(a[:4]) // a holds all of it: still saved, as llama-server saves it
	save(a)     // holds all of a[:4]: replaces it, and the older a
	if n, _ := pc.size(); n != 1 || !pc.holds(kvtrim.Compression{}, a[:6]) {
		t.Fatalf("after a prefix and its whole: %d entries", n)
	}
	save(b)
	save(slices.Concat(b[:1], a[1:5], b[5:])) // past the bound: a goes
	if pc.holds(kvtrim.Compression{}, a) || !pc.holds(kvtrim.Compression{}, b) {
		t.Errorf("past the byte bound the oldest entry should go")
	}
	// b continues: taken out, and only once; a prompt sharing a quarter of
	// no entry finds nothing.
	prompt := append(slices.Clone(b), 30, 31)
	e := pc.take(kvtrim.Compression{}, prompt, 0, 0)
	if e == nil || !slices.Equal(e.tokens, b) {
		t.Fatalf("take %v: %v", prompt, e)
	}
	pc.release(e)
	if e := pc.take(kvtrim.Compression{}, prompt, 0, 0); e != nil && slices.Equal(e.tokens, b) {
		t.Errorf("an entry was taken twice")
	}
	if e := pc.take(kvtrim.Compression{}, []kvtrim.Token{1, 40, 41, 42}, 0, 0); e != nil {
		t.Errorf("an unrelated prompt took %v", e.tokens)
	}
	// A compressed request does not take a full-cache entry.
	save(b)
	if e := pc.take(kvtrim.Compression{Policy: kvtrim.PolicySnapKV, Budget: 4, Window: 2}, prompt, 0, 0); e != nil {
		t.Errorf("a snapkv request took a full-cache entry")
	}
}

// TestPromptCacheMemory: the cache's snapshots live outside Go's heap and
// go back to the system as entries go, so that --cache-ram bounds the
// process's memory (on the heap, dropped ones stayed until the collector
// ran); once the cache is full, each save reuses a dropped entry's
// memory, as it reuses a loaded entry's, and what it holds there is the
// sequence's state, byte for byte.
func TestPromptCacheMemory(t *testing.T) {
	s := cacheSession(t, 1024)
	words, err := s.Tokenize(story(t))
	if err != nil {
		t.Fatal(err)
	}
	prompt := func(k int) []kvtrim.Token { // the story's tokens from the kth offset on, round
		p := make([]kvtrim.Token, 700)
		p[0] = words[0]
		for i := 1; i < len(p); i++ {
			p[i] = words[1+(i+k*37)%(len(words)-1)]
		}
		return p
	}
	prefill := func(tokens []kvtrim.Token) {
		t.Helper()
		s.Reset()
		if err := s.Prefill(t.Context(), tokens); err != nil {
			t.Fatal(err)
		}
	}
	pc := &promptCache{limitTokens: 1024}
	defer pc.clear()
	prefill(prompt(0))
	if err := pc.save(s, prompt(0)); err != nil {
		t.Fatal(err)
	}
	entry := pc.bytes()
	pc.limitBytes = 3*entry + entry/2 // three entries
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap := ms.HeapAlloc
	const saves = 8
	for k := 1; k < saves; k++ {
		prefill(prompt(k))
		if err := pc.save(s, prompt(k)); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	n, bytes := pc.size()
	t.Logf("%d saves of %d bytes: %d entries, %d bytes, %d into reused memory; Go's heap grew by %d bytes",
		saves, entry, n, bytes, pc.reused, int64(ms.HeapAlloc)-int64(heap))
	if n != 3 || bytes > pc.limitBytes || pc.reserved != 0 {
		t.Errorf("%d entries of %d bytes (%d reserved) past a bound of %d", n, bytes, pc.reserved, pc.limitBytes)
	}
	if pc.reused != saves-3 {
		t.Errorf("%d saves reused a dropped entry's memory; every save past the third could", pc.reused)
	}
	if grew := int64(ms.HeapAlloc) - int64(heap); grew > bytes/2 {
		t.Errorf("Go's heap grew by %d bytes with %d bytes of entries: they live on it", grew, bytes)
	}
	// The newest entry, in reused memory, holds the state a save into new
	// memory writes. Once loaded into a slot, its memory takes the next
	// save, although the cache has room.
	fresh := func() []byte {
		t.Helper()
		var b []byte
		if _, err := s.SnapshotWith(func(n int) []byte { b = make([]byte, n); return b }); err != nil {
			t.Fatal(err)
		}
		return b
	}
	last := prompt(saves - 1)
	e := pc.take(kvtrim.Compression{}, append(slices.Clone(last), 5), 0, 0)
	if e == nil {
		t.Fatal("the newest entry is not taken")
	}
	if err := s.Restore(e.snap); err != nil {
		t.Fatal(err)
	}
	if want := fresh(); !slices.Equal(e.mem[:e.snap.Bytes()], want) {
		t.Errorf("the entry in reused memory (%d bytes) is not its prompt's state (%d bytes)", e.snap.Bytes(), len(want))
	}
	pc.release(e)
	prefill(prompt(saves))
	reused := pc.reused
	if err := pc.save(s, prompt(saves)); err != nil {
		t.Fatal(err)
	}
	newest := pc.entries[len(pc.entries)-1]
	if want := fresh(); pc.reused != reused+1 || len(pc.spare) != 0 || !slices.Equal(newest.mem[:newest.snap.Bytes()], want) {
		t.Errorf("a save after a load: reused %d times (was %d), %d spare buffers left, same state as in new memory: %v",
			pc.reused, reused, len(pc.spare), slices.Equal(newest.mem[:newest.snap.Bytes()], want))
	}
	// Dropping the entries gives their memory back at once.
	if runtime.GOOS == "linux" {
		before := rss(t)
		pc.clear()
		if fell := before - rss(t); fell < 3*entry*9/10 {
			t.Errorf("clearing %d bytes of entries lowered the resident set by %d bytes", 3*entry, fell)
		}
	}
}

// rss is the process's resident set, in bytes.
func rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	var size, resident int64
	if _, err := fmt.Sscan(string(b), &size, &resident); err != nil {
		t.Fatal(err)
	}
	return resident * int64(os.Getpagesize())
}

// cacheSession is a full-cache session of nCtx cells on the test model,
// whose snapshots the cache tests save, closed when the test ends.
func cacheSession(t *testing.T, nCtx int) *kvtrim.Session {
	t.Helper()
	batch := min(nCtx, 512)
	s, err := loadModel(t).NewSession(kvtrim.SessionOptions{NCtx: nCtx, NBatch: batch, NUbatch: batch, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}
