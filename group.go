package kvtrim

import (
	"cmp"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/hooks"
)

// Group is several sessions that share one llama.cpp context, a sequence
// each, and decode together: continuous batching. Every member's decode
// (a prompt chunk or a generated token) goes to the group's decoder, which
// packs whatever the members have pending into one llama_decode, copies out
// the logits each member asked for, and hands them back. A member samples
// from its copy (Sampler.SampleLogits) and queues its next token before it
// hands the last one to its caller, so a slow consumer never holds the
// others' next step.
//
// The context keeps one KV stream per sequence (llama.cpp's non-unified
// cache), so each member has NCtx/n cells of its own and a member that
// compacts its cache shrinks its own stream. Everything else a member does
// to the shared context (removing and shifting positions, loading a
// compacted state) runs under the group's lock, between decodes.
//
// A group made with a compression that compresses prompts (the server's
// default one) observes its context (hooks.Streams): a member then prefills
// a compressed prompt in its own stream, chunk by chunk beside the others'
// decodes, and only the decodes whose attention the policy reads run alone
// in their round (observing.observedDecode). In a group made without one, a member
// compresses its prompt as a standalone session does, in a temporary
// context of its own, so that decoding pays nothing for a callback. H2O,
// which observes every decoded token through an eval callback on the
// decoding context, cannot be a member: it needs a session of its own
// (ErrOwnContext).
type Group struct {
	model   *Model
	ctx     *bindings.Context
	opt     SessionOptions
	copt    bindings.ContextOptions
	seqCtx  int // cells per sequence
	members []bool
	// streams observes the context's decodes for the members that prefill
	// a compressed prompt in their stream; nil when the group does not
	// observe. releaseCB unregisters it.
	streams   *hooks.Streams
	releaseCB func()

	// mu guards the context and the fields below; the decoder holds it
	// while it decodes.
	mu      sync.Mutex
	pending []*decodeRequest
	// awaited is the sequences that got logits in the last round, or
	// decoded a prompt chunk with more to follow, and have not asked for
	// another decode nor said they are done: the decoder waits for them
	// (gatherWait at most), so that steps stay batched and a prompt's
	// chunks follow each other. Each round starts it anew.
	awaited map[bindings.SeqID]bool
	// prompts is, for each member decoding a prompt, the ticket its first
	// chunk got: rounds take prompt chunks oldest prompt first.
	prompts map[bindings.SeqID]uint64
	tickets uint64
	closed  bool
	stats   GroupStats

	wake chan struct{} // a request came or a member went idle
	quit chan struct{} // closed by Close
	done chan struct{} // closed when the decoder has ended
}

// GroupStats count a group's decodes.
type GroupStats struct {
	Rounds int64 // llama_decode calls
	Tokens int64 // tokens decoded
	// Parts is the members' requests served; Parts/Rounds is how many
	// sequences a decode carried on average.
	Parts int64
	// SoloRounds is the rounds a member had alone, because its policy
	// read their attention (the end of a compressed prompt).
	SoloRounds int64
	// DecodeSeconds is the time spent in llama_decode; WaitSeconds the
	// time the decoder held requests but waited for members the last
	// round served (gatherWait), so that their steps share the next one.
	DecodeSeconds, WaitSeconds float64
}

// ErrOwnContext means a session's compression cannot share a context.
var ErrOwnContext = errors.New("this compression needs a context of its own")

// decodeRequest is one member's tokens for the next round.
type decodeRequest struct {
	seq    bindings.SeqID
	tokens []Token
	pos0   int32
	// logits asks for the last token's logits, copied into out; last is
	// that token's index in the round's batch.
	logits bool
	out    []float32
	last   int
	// solo is the member's observer when the policy reads this decode's
	// attention: it is decoded alone in its round, so that the query rows
	// the observer reads are all the member's.
	solo *hooks.Observer
	// follows says the member's next request comes at once: this is a
	// prompt chunk, and not its last. The decoder waits for it as for a
	// step, so that the prompt's chunks follow each other.
	follows bool
	// ticket orders prompt chunks (requests of more than one token) by
	// when their prompt began; 0 for a generated token's step.
	ticket uint64
	err    error
	done   chan struct{}
}

// NewGroup makes a context for n sequences of opt.NCtx/n cells each
// (llama.cpp rounds a sequence's share up to a multiple of 256) and starts
// its decoder. opt.Compression is ignored: each member brings its own.
func (m *Model) NewGroup(opt SessionOptions, n int) (*Group, error) {
	if n < 1 {
		return nil, fmt.Errorf("group of %d sequences: give at least 1", n)
	}
	copt, err := contextOptions(opt)
	if err != nil {
		return nil, err
	}
	copt.NSeqMax = uint32(n)
	if copt.NCtx == 0 {
		copt.NCtx = uint32(m.NCtxTrain() * n)
	}
	var streams *hooks.Streams
	releaseCB := func() {}
	if _, ok := opt.Compression.promptPolicy(); ok && n > 1 {
		streams = hooks.NewStreams()
		copt.EvalCallback, copt.EvalUserData, releaseCB = m.lib.EvalCallback(streams)
	}
	ctx, err := m.NewContext(copt)
	if err != nil {
		releaseCB()
		return nil, err
	}
	if got := ctx.NSeqMax(); got != n {
		ctx.Close()
		releaseCB()
		return nil, fmt.Errorf("group: llama.cpp made a context for %d sequences, %d asked", got, n)
	}
	g := &Group{
		model: m, ctx: ctx, opt: opt, copt: copt, seqCtx: ctx.NCtx() / n,
		members: make([]bool, n), awaited: map[bindings.SeqID]bool{}, prompts: map[bindings.SeqID]uint64{},
		streams: streams, releaseCB: releaseCB,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
	}
	// What members' temporary contexts get: one sequence, no callback.
	g.copt.NSeqMax, g.copt.EvalCallback, g.copt.EvalUserData = 1, 0, 0
	go g.decoder()
	return g, nil
}

// Close stops the decoder and frees the context. Close the members first.
func (g *Group) Close() {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	g.mu.Unlock()
	close(g.quit)
	<-g.done
	g.ctx.Close()
	g.releaseCB()
}

// Observes reports whether members prefill compressed prompts in their own
// streams (the group was made with a prompt compression).
func (g *Group) Observes() bool { return g.streams != nil }

// watch passes sequence seq's written cells to o until the returned
// function is called; the group must observe.
func (g *Group) watch(seq bindings.SeqID, o *hooks.Observer) (unwatch func()) {
	g.locked(func() { g.streams.Watch(seq, o) })
	return func() { g.locked(func() { g.streams.Unwatch(seq) }) }
}

// Sequences is the number of sequences the group holds.
func (g *Group) Sequences() int { return len(g.members) }

// SeqCells is each sequence's share of the cache, in cells.
func (g *Group) SeqCells() int { return g.seqCtx }

// Stats returns the group's decode counts.
func (g *Group) Stats() GroupStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stats
}

// SeqPositions is the first and the last position sequence seq holds in
// the shared cache (-1, -1 when it holds none): what a caller checks to
// see that nothing leaked.
func (g *Group) SeqPositions(seq int) (first, last int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	mem := g.ctx.Memory()
	return int(mem.SeqPosMin(bindings.SeqID(seq))), int(mem.SeqPosMax(bindings.SeqID(seq)))
}

// NewSession makes the member that owns sequence seq, with an empty cache
// and compression c. The sequence must be free (its previous member
// closed). A compression that evicts while decoding with observed
// attention (H2O, as the policy or the decode policy) gives ErrOwnContext.
func (g *Group) NewSession(seq int, c Compression) (*Session, error) {
	if seq < 0 || seq >= len(g.members) {
		return nil, fmt.Errorf("group member %d: the group has sequences 0 to %d", seq, len(g.members)-1)
	}
	if err := c.Check(); err != nil {
		return nil, err
	}
	if c.NeedsOwnContext() {
		return nil, fmt.Errorf("%w: its decode-time policy observes every decoded token through the decoding context's eval callback", ErrOwnContext)
	}
	m := g.model
	if err := checkEvictable(m, c); err != nil {
		return nil, err
	}
	if err := checkShifting(m, c, g.ctx.Memory(), g.seqCtx, "a sequence's %d cells (-c / -np)"); err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errors.New("group member: the group is closed")
	}
	if g.members[seq] {
		return nil, fmt.Errorf("group member %d: the sequence already has a session; close it first", seq)
	}
	g.ctx.Memory().SeqRm(bindings.SeqID(seq), -1, -1)
	g.members[seq] = true
	opt := g.opt
	opt.Compression = c
	s := &Session{model: m, ctx: g.ctx, copt: g.copt, opt: opt, seq: bindings.SeqID(seq)}
	copt := g.copt
	s.evict, s.release = newEvicting(m, c, &copt) // a policy that observes nothing: no callback
	s.be = memberBackend{s: s, g: g}
	s.batch = m.lib.NewBatch(g.ctx.NBatch(), 1)
	s.stats = s.freshStats()
	return s, nil
}

// leave frees a member's sequence: its cells are removed.
func (g *Group) leave(seq bindings.SeqID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.members[seq] = false
	delete(g.awaited, seq)
	delete(g.prompts, seq)
	if !g.closed {
		g.ctx.Memory().SeqRm(seq, -1, -1)
	}
	g.poke()
}

// idle says a member asks for no decode soon: the decoder stops waiting
// for it.
func (g *Group) idle(seq bindings.SeqID) {
	g.mu.Lock()
	delete(g.awaited, seq)
	delete(g.prompts, seq)
	g.mu.Unlock()
	g.poke()
}

// poke wakes the decoder; call with or without mu.
func (g *Group) poke() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// locked runs f under the group's lock: what a member does to the shared
// context besides decoding.
func (g *Group) locked(f func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f()
}

// submit queues r for the next round; r.done is closed when it has been
// decoded, or refused (r.err). A request larger than the context's batch
// is refused; the caller chunks.
func (g *Group) submit(r *decodeRequest) {
	r.done = make(chan struct{})
	if len(r.tokens) == 0 || len(r.tokens) > g.ctx.NBatch() {
		r.err = fmt.Errorf("group decode: %d tokens (give 1 to %d)", len(r.tokens), g.ctx.NBatch())
		close(r.done)
		return
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		r.err = errors.New("group decode: the group is closed")
		close(r.done)
		return
	}
	g.pending = append(g.pending, r)
	delete(g.awaited, r.seq)
	if len(r.tokens) > 1 {
		t, ok := g.prompts[r.seq]
		if !ok {
			g.tickets++
			t = g.tickets
			g.prompts[r.seq] = t
		}
		r.ticket = t
	}
	if len(r.tokens) == 1 || r.logits { // a step, or a prompt's last chunk
		delete(g.prompts, r.seq)
	}
	g.mu.Unlock()
	g.poke()
}

// chunk is the most tokens a member puts in one request: the batch less a
// token for each other member, so that their steps always fit beside it.
func (g *Group) chunk() int {
	return max(1, g.ctx.NBatch()-(len(g.members)-1))
}

// gatherWait is how long the decoder waits for awaited members after the
// first request arrives. Between two steps a member only samples (its next
// decode is queued before it emits), so the wait ends as soon as they are
// back, usually within microseconds; but on a loaded machine a member may
// wait milliseconds for a CPU (llama.cpp's worker threads poll for work
// after a decode), and a step that leaves it out desynchronises the slots
// for good. The bound only matters for a member that went away after its
// logits, which costs one round.
func gatherWait(lastDecode time.Duration) time.Duration {
	return min(100*time.Millisecond, max(10*time.Millisecond, 2*lastDecode))
}

// decoder runs the rounds until Close. llama.cpp's CPU threads belong to
// the thread that calls llama_decode, so it keeps one OS thread.
func (g *Group) decoder() {
	defer close(g.done)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	batch := g.model.lib.NewBatch(g.ctx.NBatch(), 1)
	defer batch.Close()
	var lastDecode time.Duration
	for {
		select {
		case <-g.wake:
		case <-g.quit:
			g.failPending()
			return
		}
		for {
			// Before every round: the members the last one served are
			// about to ask again.
			t := time.Now()
			g.gather(gatherWait(lastDecode))
			g.mu.Lock()
			g.stats.WaitSeconds += time.Since(t).Seconds()
			g.mu.Unlock()
			t0 := time.Now()
			decoded, more := g.round(batch)
			if decoded {
				lastDecode = time.Since(t0)
			}
			if !more {
				break
			}
		}
	}
}

// gather waits, at most wait, until no member the last round served is
// still expected, so that their next steps share a round.
func (g *Group) gather(wait time.Duration) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		g.mu.Lock()
		ready := len(g.pending) == 0 || len(g.awaited) == 0
		g.mu.Unlock()
		if ready {
			return
		}
		select {
		case <-g.wake:
		case <-deadline.C:
			return
		case <-g.quit:
			return
		}
	}
}

// failPending answers the requests left when the group closes.
func (g *Group) failPending() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, r := range g.pending {
		r.err = errors.New("group decode: the group is closed")
		close(r.done)
	}
	g.pending = nil
}

// round decodes the pending requests that fit in one batch, in the order
// they came but for prompt chunks (oldestPromptFirst), and reports whether
// it decoded any and whether requests are still pending.
func (g *Group) round(batch *bindings.Batch) (decoded, more bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pending) == 0 {
		return false, false
	}
	g.oldestPromptFirst()
	batch.Clear()
	var taken, left []*decodeRequest
	size := 0
	solo := false
	for _, r := range g.pending {
		// A solo request goes alone, when it comes first.
		if size+len(r.tokens) > batch.Cap() || solo || (r.solo != nil && len(taken) > 0) {
			left = append(left, r)
			continue
		}
		size += len(r.tokens)
		taken = append(taken, r)
		solo = r.solo != nil
	}
	// In sequence order: llama.cpp splits a batch over per-sequence streams
	// into ubatches of consecutive sequence ids, so any other order would
	// cut one step into several.
	slices.SortFunc(taken, func(a, b *decodeRequest) int { return int(a.seq) - int(b.seq) })
	for _, r := range taken {
		r.add(batch)
	}
	g.pending = left
	// Only this round's members are awaited next: one that got logits and
	// never came back (its caller went away) delays one round at most.
	clear(g.awaited)
	if solo {
		g.streams.Solo(taken[0].solo)
		defer g.streams.Solo(nil)
		g.stats.SoloRounds++
	}
	t0 := time.Now()
	err := g.ctx.Decode(batch)
	g.stats.DecodeSeconds += time.Since(t0).Seconds()
	if err != nil && len(taken) > 1 {
		// One member's request (a full stream, say) must not fail the
		// others': decode them one by one.
		for _, r := range taken {
			if g.streams != nil {
				g.streams.Forget(r.seq) // the failed decode's cells
			}
			batch.Clear()
			r.add(batch)
			r.err = g.ctx.Decode(batch)
			g.finish(r)
		}
	} else {
		for _, r := range taken {
			r.err = err
			g.finish(r)
		}
	}
	g.stats.Rounds++
	g.stats.Parts += int64(len(taken))
	g.stats.Tokens += int64(size)
	return true, len(g.pending) > 0
}

// oldestPromptFirst reorders the pending prompt chunks, in the places
// they hold among the other requests, by when their prompts began, so
// that a prompt's next chunk goes before the chunks of prompts that began
// after it, as llama-server fills its batch with one slot's prompt before
// the next one's. In the order the chunks came, prompts longer than a
// chunk would take turns and all finish late. Called with mu held.
func (g *Group) oldestPromptFirst() {
	var at []int
	var chunks []*decodeRequest
	for i, r := range g.pending {
		if r.ticket != 0 && r.solo == nil {
			at = append(at, i)
			chunks = append(chunks, r)
		}
	}
	if len(chunks) < 2 {
		return
	}
	slices.SortStableFunc(chunks, func(a, b *decodeRequest) int { return cmp.Compare(a.ticket, b.ticket) })
	for k, i := range at {
		g.pending[i] = chunks[k]
	}
}

// add appends r's tokens to batch and notes where its last one went.
func (r *decodeRequest) add(batch *bindings.Batch) {
	seqs := []bindings.SeqID{r.seq}
	for j, t := range r.tokens {
		batch.Add(t, r.pos0+int32(j), seqs, r.logits && j == len(r.tokens)-1)
	}
	r.last = batch.Len() - 1
}

// finish copies r's logits (from the last decode) and wakes its member.
// Called with mu held.
func (g *Group) finish(r *decodeRequest) {
	if r.err == nil && r.logits {
		r.out = append(r.out[:0], g.ctx.Logits(r.last)...)
	}
	if r.err == nil && (r.logits || r.follows) {
		g.awaited[r.seq] = true
	}
	close(r.done)
}

// Context is the group's shared llama.cpp context.
func (g *Group) Context() *bindings.Context { return g.ctx }
