package kvtrim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/hooks"
	"github.com/kvtrim/kvtrim/policies"
)

// observing is a temporary context whose decodes an Observer watches.
type observing struct {
	ctx     *bindings.Context
	obs     *hooks.Observer // it keeps the sequence's cell map
	release func()
	// inPlace: ctx is the session's own (an attached one's, or a group
	// member's), not a temporary context to free; blind: no hook feeds obs,
	// whose cell map is then read from the sequence's state (learnCells).
	inPlace, blind bool
	// group is set when ctx is a group's: the member's decodes go through
	// its rounds (observedDecode), and what else touches ctx holds its
	// lock (locked).
	group *Group
	// anchors is, per layer, the sum of the unit keys of every prompt
	// position decoded so far, evicted ones too: KeyDiff's mean key over
	// the whole prompt (policies.Prompt.Anchors), which a chunked prefill
	// keeps (addAnchors); nil otherwise.
	anchors [][]float32
}

// addAnchors adds the unit keys of positions [p0, p1), just decoded, to
// the anchors (made at the first call), read from the cache; a blind
// observer, which cannot read it, keeps none.
func (o *observing) addAnchors(p0, p1 int32) error {
	if o.blind {
		return nil
	}
	sh := o.obs.Shape()
	if o.anchors == nil {
		o.anchors = make([][]float32, sh.Layers)
		for il := range o.anchors {
			o.anchors[il] = make([]float32, sh.KVHeads*sh.HeadDim)
		}
	}
	positions := positions32(p0, int(p1-p0))
	for il, sum := range o.anchors {
		k, err := o.obs.Keys(il, positions)
		if err != nil {
			return err
		}
		for h := range sh.KVHeads {
			policies.AddUnitKeys(sum[h*sh.HeadDim:][:sh.HeadDim], k, h)
		}
	}
	return nil
}

// learnCells gives a blind observer the sequence's cells: their order in
// its saved state (as if packed from cell 0), which is all that eviction
// and compaction use of them.
func (o *observing) learnCells(seq bindings.SeqID) error {
	if !o.blind {
		return nil
	}
	state, err := o.ctx.SeqState(seq, 0)
	if err != nil {
		return err
	}
	byCell, err := hooks.StatePositions(state, seq)
	if err != nil {
		return err
	}
	o.obs.SetCells(hooks.Packed(byCell))
	return nil
}

// locked runs f, which uses the observing context other than to decode.
func (o *observing) locked(f func()) {
	if o.group != nil {
		o.group.locked(f)
		return
	}
	f()
}

// observedDecode decodes tokens at positions from pos0 into a group
// member's stream through the group's rounds (alone in its round when the
// observer is armed, so that the rows it reads are the member's) and
// records their cells.
func (o *observing) observedDecode(s *Session, tokens []Token, pos0 int32, logits bool) error {
	r := &decodeRequest{seq: s.seq, tokens: tokens, pos0: pos0, logits: logits, out: s.logits}
	if o.obs.Armed() {
		r.solo = o.obs
	}
	o.group.submit(r)
	if err := (memberDecode{s, r}).wait(); err != nil {
		return err
	}
	return o.obs.Record(positions32(pos0, len(tokens)))
}

// positions32 is pos0, pos0+1, ..., n of them.
func positions32(pos0 int32, n int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = pos0 + int32(i)
	}
	return out
}

func (o *observing) close() {
	if o.ctx != nil {
		if !o.inPlace {
			o.ctx.Close()
		}
		o.ctx = nil
		o.release()
	}
}

// newObserver makes an observer for m's shape that reads attention the way
// the graph of a context with flash attention fa will hold it. Auto
// resolves to on wherever flash attention is supported, as on every CPU
// build.
func newObserver(m *Model, fa bindings.FlashAttn) *hooks.Observer {
	src := hooks.FromQK
	if fa == bindings.FlashAttnDisabled {
		src = hooks.FromSoftmax
	}
	return hooks.NewObserver(hooks.Shape{
		Layers: m.NLayer(), Heads: m.NHead(), KVHeads: m.NHeadKV(), HeadDim: m.NEmbd() / m.NHead(),
	}, src)
}

// openObserving makes the temporary context for a prompt of n tokens;
// with queries its observer reads the queries whatever flash attention
// does (Qcur exists either way). An attached session observes in the
// host's context itself when it can (a hook there, or a policy that reads
// no attention); otherwise, like a session of kvtrim's own, in a temporary
// context made from the host's model, whose kept cells then move into the
// host's.
func (s *Session) openObserving(n int, observes policies.Observes) (*observing, error) {
	queries := observes == policies.ObservesQueries
	readsAttention := queries || observes == policies.ObservesWindow
	if s.attached && !s.hostFilled && (s.hook != nil || !readsAttention) {
		return s.openAttachedObserving(n, queries)
	}
	m := s.model
	obs := newObserver(m, s.copt.FlashAttn)
	if queries {
		obs = newObserver(m, bindings.FlashAttnEnabled)
	}
	copt := s.copt
	copt.NCtx = uint32(n)
	var release func()
	copt.EvalCallback, copt.EvalUserData, release = m.lib.EvalCallback(obs)
	ctx, err := m.NewContext(copt)
	if err != nil {
		release()
		return nil, fmt.Errorf("observing context for %d prompt tokens: %w", n, err)
	}
	s.stats.Attention = obs.Source().String()
	return &observing{ctx: ctx, obs: obs, release: release}, nil
}

// openMemberObserving makes a group member's own stream the observing one:
// the prompt is decoded there in the group's rounds, the group's
// hooks.Streams passing the observer its cells (and, in the rounds it has
// alone, the query rows), and the kept cells are compacted in place. The
// observer reads the queries whatever flash attention does: a softmax's
// columns would be the stream's cells, not the cache's rows.
func (s *Session) openMemberObserving(g *Group) *observing {
	obs := newObserver(s.model, bindings.FlashAttnEnabled)
	s.stats.Attention = obs.Source().String()
	return &observing{ctx: s.ctx, obs: obs, release: g.watch(s.seq, obs), inPlace: true, group: g}
}

// observingGroup is the session's group when it is a member of one that
// observes its context (Group.Observes), else nil.
func (s *Session) observingGroup() *Group {
	if b, ok := s.be.(memberBackend); ok && b.g.Observes() {
		return b.g
	}
	return nil
}

// prefillCells is how many cells a compressed prefill of n tokens holds at
// once: the prompt and the lookahead, or when chunked the budget, a chunk
// (or the rows the policy reads, if more) and the lookahead; and rows.
func (c Compression) prefillCells(n, budget, chunk int) (cells, rows int) {
	pol, _ := c.promptPolicy()
	switch pol.Observes {
	case policies.ObservesWindow:
		rows = c.WindowFor(budget)
	case policies.ObservesQueries:
		rows = min(pol.QueryRows, n)
	}
	if chunk > 0 {
		return budget + max(chunk, rows) + c.lookaheadTokens(), rows
	}
	return n + c.lookaheadTokens(), rows
}

// streamFor is the observing group whose stream (the session's own) a
// compressed prefill holding cells cells at once runs in, or nil: it does
// when those cells fit there.
func (s *Session) streamFor(cells int) *Group {
	if g := s.observingGroup(); g != nil && cells <= s.NCtx() {
		return g
	}
	return nil
}

// PrefillsAside reports whether Prefill of a prompt of n tokens builds it
// in a temporary context of its own (Compression.PrefillsAside) rather
// than in the session's stream of an observing group, where no context
// but the group's takes memory.
func (s *Session) PrefillsAside(n int) bool {
	c := s.opt.Compression.withDefaults()
	if !c.PrefillsAside(n) {
		return false
	}
	budget := c.BudgetFor(n)
	chunk, _, err := c.chunkFor(n, budget, s.NCtx())
	if err != nil {
		return true
	}
	cells, _ := c.prefillCells(n, budget, chunk)
	return s.streamFor(cells) == nil
}

// prefillCompressed prefills n > budget tokens into an observing context,
// armed over the last decode call so that it keeps the window's rows,
// scores and evicts there, and moves the kept cells into the session's
// context. A chunked prefill (Compression.Chunk) fills that context a chunk
// at a time, evicting back to the budget after each (prefillChunks), so
// that it needs only budget + chunk cells.
func (s *Session) prefillCompressed(ctx context.Context, tokens []Token, comp Compression, budget int) (err error) {
	n := len(tokens)
	cfg, err := comp.snapKV(budget)
	if err != nil {
		return err
	}
	if err := cfg.Validate(n); err != nil {
		return err
	}
	if budget > s.NCtx() {
		return fmt.Errorf("%w: a budget of %d cells does not fit in a context of %d cells (-c); raise -c or lower the budget", ErrPromptTooLong, budget, s.NCtx())
	}
	chunk, note, err := comp.chunkFor(n, budget, s.NCtx())
	if err != nil {
		return err
	}
	if s.hostFilled {
		chunk = 0 // the host's cells are all there already
	}
	if note != "" {
		s.stats.Note = note
	}
	lookahead := comp.lookaheadTokens()
	pol, _ := comp.promptPolicy() // Check and PrefillsAside made sure
	// The rows the policy reads (the window's, or its last queries) ride in
	// the prompt's last decode call (or last two, so that they hold that
	// many tokens): the observer keeps the last rows it sees while armed.
	window := cfg.Window
	cells, rows := comp.prefillCells(n, budget, chunk)
	nctx := s.NCtx()
	var o *observing
	var reopen func() error
	defer func() {
		if reopen != nil {
			err = errors.Join(err, reopen())
		}
	}()
	if g := s.streamFor(cells); g != nil {
		o = s.openMemberObserving(g)
	} else {
		// The session's own context is freed while the prompt is built in
		// the observing one, and made again for the kept cells: the two
		// never take memory at once.
		reopen = s.setAside()
		if o, err = s.openObserving(cells, pol.Observes); err != nil {
			return err
		}
	}
	defer o.close()
	switch {
	case o.inPlace:
		s.stats.NCtxPeak = nctx
	case reopen != nil:
		s.stats.NCtxPeak = max(nctx, o.ctx.NCtx())
	default:
		s.stats.NCtxPeak = nctx + o.ctx.NCtx()
	}
	// The last decode call is the prompt's last ubatch (at least the rows
	// read): the observer reads the armed call's queries in every ubatch
	// and keeps the last rows, and each node it reads splits the graph's
	// computation there. On the CPU that costs little; on a device reached
	// over the network (--rpc) every split is a round trip, and arming a
	// whole batch of four ubatches made SnapKV's prefill 1.6x the full
	// cache's (docs/RPC.md).
	nb := min(o.ctx.NBatch(), o.ctx.NUbatch(), s.batch.Cap())
	last := n % nb
	if last == 0 {
		last = nb
	}
	if chunk > 0 {
		// Chunks, the last of them holding the rows the policy reads (the
		// one before it is then shorter).
		if last = n % chunk; last == 0 {
			last = chunk
		}
		last = max(last, rows, 1)
	} else if last < rows {
		last += nb
	}
	if s.hostFilled || o.group != nil {
		// Only the rows the policy reads need decoding again (one, for a
		// policy that reads no attention: the last token's logits); a group
		// member decodes them alone in its rounds, so no more than that.
		last = max(rows, 1)
	}
	last = min(last, n)
	switch {
	case s.hostFilled:
		// The host decoded the prompt itself: its cells come in, and only
		// the last call's tokens are decoded again, observed.
		err = s.copyHostPrompt(o, n, n-last)
	case chunk > 0:
		err = s.prefillChunks(ctx, o, tokens[:n-last], n, comp, cfg, chunk)
	default:
		err = s.decode(ctx, o.ctx, o, tokens[:n-last], n)
	}
	if err != nil {
		return err
	}
	// The lookahead tokens' rows join the window's.
	switch pol.Observes {
	case policies.ObservesWindow:
		o.obs.Arm(window + lookahead)
	case policies.ObservesQueries:
		o.obs.Arm(rows)
	}
	err = s.decode(ctx, o.ctx, o, tokens[n-last:], n)
	if err == nil && o.anchors != nil {
		err = o.addAnchors(int32(n-last), int32(n))
	}
	t0 := time.Now() // observing: the lookahead and the scores
	if err == nil {
		err = s.lookahead(o, lookahead)
		s.notePeak(s.used + lookahead)
	}
	if err == nil {
		err = o.learnCells(s.seqIn(o.ctx))
	}
	o.obs.Disarm()
	if err != nil {
		return err
	}
	s.stats.LookaheadTokens = lookahead

	// The columns the policy chooses among: the positions the observing
	// context holds (all of the prompt's, unless chunks were evicted),
	// less the lookahead tokens'.
	held := slices.DeleteFunc(o.obs.Cells().Positions(), func(p int32) bool { return p >= int32(n) })
	in := policies.Prompt{
		Len: len(held), End: n, Budget: budget, Window: window, KVHeads: s.model.NHeadKV(), Layers: s.model.NLayer(),
		Kernel: cfg.Kernel, Pool: cfg.Pool, Agg: cfg.Agg, Seed: comp.Seed,
	}
	if err := s.observeFor(o, pol, &in, held, lookahead); err != nil {
		return err
	}
	att := in.Attention // nil unless the policy reads the window's
	t1 := time.Now()
	cols, err := pol.Select(in)
	if err != nil {
		return fmt.Errorf("%s: %w", pol.Name, err)
	}
	kept := make([]int, len(cols))
	for i, c := range cols {
		kept[i] = int(held[c])
	}
	t2 := time.Now()
	t3 := t2
	// The last prompt token is decoded again in the session's context for
	// its logits, so it leaves with the evicted ones.
	// So do the lookahead tokens.
	ranges := append(hooks.EvictRanges(kept, n-1), hooks.Range{P0: int32(n - 1), P1: int32(n + lookahead)})
	var state []byte
	o.locked(func() {
		seq := s.seqIn(o.ctx)
		if err = (hooks.Sequence{Mem: o.ctx.Memory(), ID: seq, Cells: o.obs.Cells()}).Evict(ranges); err != nil {
			return
		}
		t3 = time.Now()
		// Compaction: the kept cells move, packed, into the session's
		// context (which has no eval callback; a group member's stream
		// stays where it is); the observing one is freed first.
		state, err = hooks.Take(o.ctx, seq, o.obs.Cells(), 0)
	})
	if err != nil {
		return err
	}
	cellMap := o.obs.Cells()
	o.close()
	if reopen != nil {
		if err := reopen(); err != nil {
			return err
		}
		reopen = nil
	}
	var packed *hooks.CellMap
	s.withCtx(func() {
		if s.hostFilled {
			s.ctx.Memory().SeqRm(s.seq, -1, -1) // the host's whole prompt goes; the kept cells come back
			s.hostFilled = false
		}
		packed, err = hooks.Put(s.ctx, s.seq, state, cellMap, 0)
	})
	if err != nil {
		return err
	}
	lastPos := int32(n - 1)
	shifts := s.evict != nil && s.evict.policy.Shifts
	if shifts {
		// Streaming goes on from here: positions become 0..k-1 (after the
		// move, since a pending shift does not survive a state save).
		s.withCtx(func() { err = s.sequence().CloseGaps(kept[:len(kept)-1]) })
		if err != nil {
			return err
		}
		lastPos = int32(len(kept) - 1)
	}
	s.nextPos, s.used = lastPos, len(kept)-1
	if err := s.decodeToken(tokens[n-1], lastPos); err != nil {
		return fmt.Errorf("decode the last prompt token after compaction: %w", err)
	}
	s.nextPos, s.used = lastPos+1, len(kept)
	if s.evict != nil {
		start := kept
		if shifts {
			start = positions(0, len(kept))
		}
		var scores []float32
		if att != nil {
			scores = keptScores(att, cols)
		}
		if err := s.startEvicting(packed, start, scores, comp.decodeOptions(budget, false)); err != nil {
			return err
		}
	}
	t4 := time.Now()

	st := &s.stats
	st.ObserveMs += msBetween(t0, t1)
	st.ScoreMs += msBetween(t1, t2)
	st.EvictMs += msBetween(t2, t3)
	st.CompactMs += msBetween(t3, t4)
	// What the cache holds: the kept cells, less what the decode policy
	// dropped of them; attention still scans the packed span.
	s.recordHeld(n)
	st.EvictedCells = n - s.used
	st.NKVBefore, st.NKVAfter = hooks.PadNKV(n), hooks.PadNKV(len(kept))
	return nil
}

// observeFor gives the policy what it reads of the observing context: the
// window's votes over the held positions (and the lookahead's, which then
// go), or the held cells' keys and values, and the last queries.
func (s *Session) observeFor(o *observing, pol policies.Policy, in *policies.Prompt, held []int32, lookahead int) error {
	switch pol.Observes {
	case policies.ObservesWindow:
		over := held
		for i := range lookahead {
			over = append(over, int32(in.End+i))
		}
		att, err := o.obs.VotesOver(over)
		if err != nil {
			return err
		}
		for i := range att {
			att[i] = att[i].FirstCols(len(held))
		}
		in.Attention = att
	case policies.ObservesKeys, policies.ObservesQueries:
		in.Anchors = o.anchors
		if !o.blind && pol.Observes == policies.ObservesKeys {
			// Straight from the cache, a layer at a time.
			in.Keys = func(il int) (policies.Keys, error) { return o.obs.Keys(il, held) }
			break
		}
		// From a copy of the sequence's state: no hook saw the cache, or
		// the policy reads values too.
		kv, err := s.promptState(o.ctx, held)
		if err != nil {
			return err
		}
		in.Keys, in.Values = kv.Keys, kv.Values
		if pol.Observes == policies.ObservesQueries {
			in.Heads, in.Queries = s.model.NHead(), o.obs.Queries
			r, ok := s.model.Rope()
			if !ok {
				return fmt.Errorf("%s: model %s (architecture %s) rotates positions in a way kvtrim does not model (multi-section or vision RoPE); use another policy", pol.Name, s.model.Path, s.model.Arch())
			}
			in.Rope = policies.Rope(r)
		}
	}
	return nil
}

// promptState reads the keys and values of the prompt positions an
// observing context holds (held, ascending) from its sequence's state,
// which carries them whatever eval callback the context has (or none):
// what key-only policies score.
func (s *Session) promptState(c *bindings.Context, held []int32) (*hooks.StateKV, error) {
	seq := s.seqIn(c)
	var state []byte
	var err error
	s.withCtx(func() { state, err = c.SeqState(seq, 0) })
	if err != nil {
		return nil, fmt.Errorf("read the prompt's keys: %w", err)
	}
	m := s.model
	kv, err := hooks.ReadStateKV(state, int32(seq), m.NHeadKV(), m.NEmbd()/m.NHead())
	switch {
	case err != nil:
		return nil, fmt.Errorf("read the prompt's keys: %w", err)
	case kv.Layers != m.NLayer():
		return nil, fmt.Errorf("read the prompt's keys: the state holds %d layers, the model has %d", kv.Layers, m.NLayer())
	case !slices.Equal(kv.Positions, held):
		return nil, fmt.Errorf("read the prompt's keys: the state holds %d positions, not the %d the sequence's map says", len(kv.Positions), len(held))
	}
	return kv, nil
}

// lookahead greedily generates k tokens after the prompt in the observing
// context, whose observer is still armed, so that their query rows join the
// window's. The session's positions and counters stay where the prompt left
// them: the caller evicts these tokens.
func (s *Session) lookahead(o *observing, k int) error {
	seqs := []bindings.SeqID{s.seqIn(o.ctx)}
	for i := range k {
		pos := s.nextPos + int32(i)
		if o.group != nil {
			if err := o.observedDecode(s, []Token{Token(argmax(s.logits))}, pos, true); err != nil {
				return fmt.Errorf("lookahead token %d of %d: %w", i+1, k, err)
			}
			continue
		}
		s.batch.Clear()
		s.batch.Add(Token(argmax(o.ctx.Logits(-1))), pos, seqs, true)
		if err := o.ctx.Decode(s.batch); err != nil {
			return fmt.Errorf("lookahead token %d of %d: %w", i+1, k, err)
		}
		if err := o.obs.Record([]int32{pos}); err != nil {
			return err
		}
	}
	return nil
}

// argmax is the index of the largest value.
func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
