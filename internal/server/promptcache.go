package server

import (
	"slices"
	"sync"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/internal/hostmem"
)

// PromptReuse is how slots reuse the prompts they decoded, as in
// llama-server.
type PromptReuse struct {
	// Similarity is the share of a request's prompt that a free slot's
	// cache must already hold for the request to go to that slot rather
	// than to the least recently used one (--slot-prompt-similarity; 0:
	// always the least recently used).
	Similarity float64
	// CacheMiB bounds the prompt cache in host memory (--cache-ram): when
	// a slot gives up most of what it holds for a new request, it keeps a
	// snapshot of it there, and loads the cached snapshot that the new
	// prompt continues best, if any. 0 disables it, -1 sets no bound.
	CacheMiB int
}

// DefaultPromptReuse is llama-server's: similarity 0.1, an 8 GiB cache.
func DefaultPromptReuse() PromptReuse { return PromptReuse{Similarity: 0.1, CacheMiB: 8192} }

// Thresholds of llama-server's prompt cache.
const (
	// A slot that would keep less than this share of what it holds
	// saves it to the cache first.
	saveBelowKeep = 0.5
	// A cached prompt of which a request would keep less than this share
	// is left in the cache ("don't trash large prompts").
	loadFromKeep = 0.25
)

// promptCache is the --cache-ram cache: snapshots of prompts that slots
// gave up, oldest first, bounded in bytes and in tokens.
//
// The snapshots live outside Go's heap (hostmem), each entry's memory
// freed as the entry goes, so that the bound holds for the process's
// memory too: on the heap, dropped snapshots stayed resident until the
// collector ran, and a 256 MiB cache took 690 MB. A save reuses memory
// already mapped where it can, since a new buffer's first write faults
// in every page (docs/SERVE.md): that of an entry loaded into a slot, kept
// while the bound has room for it, or else of an entry that goes to make
// room.
type promptCache struct {
	mu         sync.Mutex
	limitBytes int64 // 0: no bound
	// limitTokens bounds the tokens of all entries (the context's cells),
	// raised to what limitBytes holds at the entries' mean size per token.
	limitTokens int
	entries     []*cachedPrompt
	// spare is the memory of entries loaded into slots, kept for the next
	// saves while the bound has room for it (at most maxSpare buffers).
	spare [][]byte
	// reserved is the memory given to saves not yet put.
	reserved int64
	// reused counts the saves written into memory mapped before.
	reused int
}

// maxSpare is how many loaded entries' buffers the cache keeps for saves.
const maxSpare = 4

// cachedPrompt is one snapshot and the tokens its cache holds, in
// position order.
type cachedPrompt struct {
	tokens []kvtrim.Token
	snap   *kvtrim.Snapshot
	mem    []byte // the snapshot's memory (hostmem): freed with the entry
}

// newPromptCache makes the cache for mib MiB (-1: no bound) and at least
// nCtx tokens, or returns nil for mib 0.
func newPromptCache(mib, nCtx int) *promptCache {
	if mib == 0 {
		return nil
	}
	return &promptCache{limitBytes: max(0, int64(mib)) << 20, limitTokens: nCtx}
}

// holds reports whether an entry already holds all of tokens, cached with
// compression c: saving them again would add nothing.
func (pc *promptCache) holds(c kvtrim.Compression, tokens []kvtrim.Token) bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for _, e := range pc.entries {
		if e.snap.Compression() == c && sharedPrefix(e.tokens, tokens) == len(tokens) {
			return true
		}
	}
	return false
}

// save snapshots sess, whose cache holds tokens (which save keeps), into
// the cache. A snapshot larger than the whole cache is not kept.
func (pc *promptCache) save(sess *kvtrim.Session, tokens []kvtrim.Token) error {
	var mem []byte
	snap, err := sess.SnapshotWith(func(n int) []byte {
		mem = pc.reserve(n)
		return mem
	})
	if err != nil {
		pc.mu.Lock()
		pc.reserved -= int64(cap(mem))
		pc.mu.Unlock()
		hostmem.Free(mem)
		return err
	}
	pc.put(tokens, snap, mem)
	return nil
}

// reserve returns n bytes for a save, or nil when n is more than the
// whole cache or cannot be mapped: the smallest spare buffer that holds
// them, else, once room is made for them as llama-server makes it (the
// oldest entries go), the smallest buffer of the entries that went, else
// new memory.
func (pc *promptCache) reserve(n int) []byte {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.limitBytes > 0 && int64(n) > pc.limitBytes {
		return nil
	}
	best := -1
	for i, b := range pc.spare {
		if cap(b) >= n && (best < 0 || cap(b) < cap(pc.spare[best])) {
			best = i
		}
	}
	var mem []byte
	if best >= 0 {
		mem = pc.spare[best]
		pc.spare = slices.Delete(pc.spare, best, best+1)
	}
	fit := n // a dropped entry's memory, unless a spare buffer serves
	if mem != nil {
		fit = 0
	}
	if dropped := pc.makeRoom(int64(n), fit); dropped != nil {
		mem = dropped
	}
	if mem != nil {
		mem = hostmem.Shrink(mem, n)
		pc.reused++
	} else {
		var err error
		if mem, err = hostmem.Alloc(n); err != nil {
			return nil
		}
	}
	pc.reserved += int64(cap(mem))
	return mem
}

// put adds a snapshot of tokens (which it keeps), held in mem from
// reserve, dropping the entries it holds all of, then the oldest until
// the bounds are met.
func (pc *promptCache) put(tokens []kvtrim.Token, snap *kvtrim.Snapshot, mem []byte) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.reserved -= int64(cap(mem))
	size := int64(cap(mem))
	c := snap.Compression()
	pc.entries = slices.DeleteFunc(pc.entries, func(e *cachedPrompt) bool {
		if e.snap.Compression() == c && sharedPrefix(e.tokens, tokens) == len(e.tokens) {
			free(e)
			return true
		}
		return false
	})
	hostmem.Free(pc.makeRoom(size, 0))
	pc.entries = append(pc.entries, &cachedPrompt{tokens: tokens, snap: snap, mem: mem})
	pc.trim()
}

// makeRoom frees spare buffers, then drops the oldest entries, until n
// more bytes fit the bound. Of the entries it drops, it keeps the memory
// of the smallest that holds fit bytes (fit 0: none) and returns it,
// for the caller to use or free. Called with mu held.
func (pc *promptCache) makeRoom(n int64, fit int) []byte {
	over := func() bool { return pc.limitBytes > 0 && pc.held()+n > pc.limitBytes }
	for over() && len(pc.spare) > 0 {
		hostmem.Free(pc.spare[0])
		pc.spare = slices.Delete(pc.spare, 0, 1)
	}
	var keep []byte
	for over() && len(pc.entries) > 0 {
		if e := pc.entries[0]; fit > 0 && cap(e.mem) >= fit && (keep == nil || cap(e.mem) < cap(keep)) {
			e.mem, keep = keep, e.mem // the one kept before is freed with e
		}
		pc.dropOldest()
	}
	return keep
}

// held is the memory the bound covers: the entries', the spare buffers'
// and what saves hold. Called with mu held.
func (pc *promptCache) held() int64 {
	n := pc.bytes() + pc.reserved
	for _, b := range pc.spare {
		n += int64(cap(b))
	}
	return n
}

// release gives back an entry taken and loaded into a slot: its memory
// is kept for the next save while the bound has room for it, else freed.
func (pc *promptCache) release(e *cachedPrompt) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if len(pc.spare) < maxSpare && (pc.limitBytes == 0 || pc.held()+int64(cap(e.mem)) <= pc.limitBytes) {
		pc.spare, e.mem = append(pc.spare, e.mem), nil
	}
	free(e)
}

// dropOldest drops and frees the oldest entry. Called with mu held.
func (pc *promptCache) dropOldest() {
	free(pc.entries[0])
	pc.entries = slices.Delete(pc.entries, 0, 1)
}

// free gives back the memory of an entry that is no longer in the cache:
// one dropped, or one taken once it is loaded. It cannot be used after.
func free(e *cachedPrompt) {
	hostmem.Free(e.mem)
	e.mem, e.snap = nil, nil
}

// clear drops every entry and spare buffer, when the slots stop.
func (pc *promptCache) clear() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for len(pc.entries) > 0 {
		pc.dropOldest()
	}
	for _, b := range pc.spare {
		hostmem.Free(b)
	}
	pc.spare = nil
}

// trim drops the oldest entries while the cache holds more tokens than
// its bound: nCtx, or what the byte bound holds at the entries' mean size
// per token when that is more. Called with mu held.
func (pc *promptCache) trim() {
	limit := pc.limitTokens
	if n := pc.tokens(); pc.limitBytes > 0 && n > 0 {
		perToken := max(1, pc.bytes()/int64(n))
		limit = max(limit, int(pc.limitBytes/perToken))
	}
	for len(pc.entries) > 0 && limit > 0 && pc.tokens() > limit {
		pc.dropOldest()
	}
}

// bytes is the memory of the entries, whole pages. Called with mu held.
func (pc *promptCache) bytes() int64 {
	var n int64
	for _, e := range pc.entries {
		n += int64(cap(e.mem))
	}
	return n
}

func (pc *promptCache) tokens() int {
	n := 0
	for _, e := range pc.entries {
		n += len(e.tokens)
	}
	return n
}

// take removes and returns the entry from which a request with
// compression c and this prompt would keep the most, both as a share of
// the entry (at least loadFromKeep) and of the prompt, and more on both
// than the slot's own cache would (keep of its held tokens); nil when
// none does better. The caller gives it back (release) once it is loaded.
func (pc *promptCache) take(c kvtrim.Compression, prompt []kvtrim.Token, keep, held int) *cachedPrompt {
	keepBest := -1.0 // an empty slot: any entry does better
	if held > 0 {
		keepBest = float64(keep) / float64(held)
	}
	simBest := float64(keep) / float64(len(prompt))
	pc.mu.Lock()
	defer pc.mu.Unlock()
	best := -1
	for i, e := range pc.entries {
		n := cachedPrefix(e.snap.Compression(), c, e.tokens, prompt)
		keep, sim := float64(n)/float64(len(e.tokens)), float64(n)/float64(len(prompt))
		if keep < loadFromKeep {
			continue
		}
		if keep > keepBest && sim > simBest {
			best, keepBest, simBest = i, keep, sim
		}
	}
	if best < 0 {
		return nil
	}
	e := pc.entries[best]
	pc.entries = slices.Delete(pc.entries, best, best+1)
	return e
}

// size is the cache's entries and their bytes, for /metrics and logs.
func (pc *promptCache) size() (entries int, bytes int64) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return len(pc.entries), pc.bytes()
}

// cachedPrefix is how many leading tokens of prompt a cache holding
// history, made with compression held, lets a request with compression c
// keep. The full cache keeps the prefix they share, less one (the last
// prompt token is decoded for its logits). A compressed one holds a
// subset of its positions, whose meaning ends with the whole sequence: it
// is kept whole when prompt continues all of history, else not at all.
// Policies that evict while decoding (H2O, StreamingLLM) keep nothing.
func cachedPrefix(held, c kvtrim.Compression, history, prompt []kvtrim.Token) int {
	if held != c || !c.Appendable() || len(history) == 0 {
		return 0
	}
	shared := sharedPrefix(history, prompt)
	if !c.Evicts() {
		return min(shared, len(prompt)-1)
	}
	if shared == len(history) && shared < len(prompt) {
		return shared
	}
	return 0
}

// swapCached runs before a request that the pool gave to this slot
// although the slot's cache holds little of its prompt (the least
// recently used slot, or one that keeps less than half of what it holds):
// as llama-server does, it saves what the slot holds to the prompt cache,
// then loads the cached prompt that the request continues best, if one
// does better than the slot's own.
func (sl *slot) swapCached(c kvtrim.Compression, prompt []kvtrim.Token) {
	pc := sl.cache
	if sl.sess != nil && sl.dirty && len(sl.history) > 0 && sl.comp.Appendable() && !pc.holds(sl.comp, sl.history) {
		if err := pc.save(sl.sess, slices.Clone(sl.history)); err != nil {
			sl.log.Warn().Err(err).Int("slot", sl.id).Msg("prompt cache: the slot's prompt is not saved")
		}
	}
	e := pc.take(c, prompt, sl.reusable(c, prompt), len(sl.history))
	if e == nil {
		return
	}
	sess, err := sl.session(c)
	if err == nil {
		err = sess.Restore(e.snap)
	}
	pc.release(e)
	if err != nil {
		// The slot starts from an empty cache; the request is served all
		// the same.
		sl.log.Warn().Err(err).Int("slot", sl.id).Int("tokens", len(e.tokens)).Msg("prompt cache: a cached prompt did not load")
		sl.history = sl.history[:0]
		return
	}
	sl.history, sl.dirty = e.tokens, true
}
