package kvtrim

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/hooks"
	"github.com/kvtrim/kvtrim/policies"
)

// evicting is a session's decode-time policy (policies.DecodePolicy): the
// evictor that says which positions leave as tokens are decoded and, for a
// policy that scores by attention, the observer on the session's own
// context that feeds it every decoded token's row.
type evicting struct {
	policy policies.DecodePolicy
	ev     policies.Evictor // made by the prefill
	obs    *hooks.Observer  // nil unless the policy observes steps; it keeps the cell map
	// positions and row are step's buffers, reused token to token.
	positions []int32
	row       []float32
}

// newEvicting makes the decode-time state of a compression that has a
// decode-time policy (nil otherwise), filling copt's eval callback when
// the policy observes steps; release unregisters it.
func newEvicting(m *Model, c Compression, copt *bindings.ContextOptions) (*evicting, func()) {
	p, _, ok := c.decodeEntry()
	if !ok {
		return nil, func() {}
	}
	e := &evicting{policy: p}
	if p.Observes != policies.ObservesSteps {
		return e, func() {}
	}
	e.obs = newObserver(m, copt.FlashAttn)
	var release func()
	copt.EvalCallback, copt.EvalUserData, release = m.lib.EvalCallback(e.obs)
	return e, release
}

// reset forgets the sequence: a new prompt starts a new evictor.
func (e *evicting) reset() {
	e.ev = nil
	if e.obs != nil {
		e.obs.SetCells(hooks.NewCellMap())
	}
}

// KeptPositions is the positions a decode-time policy keeps, ascending (nil
// for a session without one, or before its prompt).
func (s *Session) KeptPositions() []int {
	if s.evict == nil || s.evict.ev == nil {
		return nil
	}
	return s.evict.ev.Kept()
}

// columnScores adds, for every position of att's columns, the attention
// its rows gave it, summed over layers, heads and rows, to dst.
func columnScores(dst []float32, att []policies.WindowAttention) {
	for _, a := range att {
		for h := range a.Heads {
			for r := range a.Rows {
				row := a.Data[(h*a.Rows+r)*a.Cols:][:a.Cols]
				for c, v := range row {
					dst[c] += v
				}
			}
		}
	}
}

// prefillEvicting prefills a prompt under a decode-time policy run from
// the prompt on (or after a prompt-time policy that kept the prompt
// whole): a shifting policy in chunks, making room before each; the
// others whole, then started on every position, scored by the prompt's
// attention when they observe it.
func (s *Session) prefillEvicting(ctx context.Context, tokens []Token, o policies.DecodeOptions) error {
	e := s.evict
	n := len(tokens)
	if s.nextPos != 0 {
		return fmt.Errorf("%s prefill: the session already holds a prompt", e.policy.Name)
	}
	ev, err := e.policy.New(o)
	if err != nil {
		return err
	}
	e.ev = ev
	if e.policy.Shifts {
		return s.prefillShifting(ctx, tokens, o)
	}
	if n > s.NCtx() {
		return fmt.Errorf("%w: %d tokens do not fit in a context of %d cells (-c); %s evicts after the prompt, so raise -c", ErrPromptTooLong, n, s.NCtx(), e.policy.Name)
	}
	var scores []float32
	if e.obs == nil {
		if err := s.decode(ctx, s.ctx, nil, tokens, n); err != nil {
			return err
		}
	} else if scores, err = s.prefillObserved(ctx, tokens); err != nil {
		return err
	}
	t1 := time.Now()
	evicted, err := ev.Start(positions(0, n), scores)
	if err != nil {
		return err
	}
	t2 := time.Now()
	if err := s.evictPositions(evicted); err != nil {
		return err
	}
	st := &s.stats
	st.ScoreMs += msBetween(t1, t2)
	st.EvictMs += msSince(t2)
	s.recordHeld(n)
	st.NKVBefore, st.NKVAfter = hooks.PadNKV(n), hooks.PadNKV(n)
	if e.obs != nil {
		st.NKVAfter = hooks.PadNKV(int(e.obs.Cells().MaxCell() + 1))
	}
	return nil
}

// prefillObserved decodes the prompt one ubatch per decode call with the
// observer armed over the rows the policy scores by (every row, or the
// last PromptRows), adding each ubatch's attention columns to the
// positions' scores as it goes: no n x n matrix is held.
func (s *Session) prefillObserved(ctx context.Context, tokens []Token) ([]float32, error) {
	e := s.evict
	n := len(tokens)
	scores := make([]float32, n)
	o := &observing{obs: e.obs, release: func() {}}
	step := s.ctx.NUbatch()
	for i := 0; i < n; i += step {
		chunk := tokens[i:min(i+step, n)]
		rows := len(chunk)
		if k := e.policy.PromptRows; k > 0 {
			rows = max(0, k-(n-i-len(chunk))) // only the last k rows of the prompt
			rows = min(rows, len(chunk))
		}
		if rows > 0 {
			e.obs.Arm(rows)
		}
		err := s.decode(ctx, s.ctx, o, chunk, n)
		e.obs.Disarm()
		if err != nil || rows == 0 {
			if err != nil {
				return nil, err
			}
			continue
		}
		t0 := time.Now()
		att, err := e.obs.Votes(i + len(chunk))
		if err != nil {
			return nil, err
		}
		columnScores(scores[:i+len(chunk)], att)
		s.stats.ObserveMs += msSince(t0)
	}
	return scores, nil
}

// prefillShifting prefills a prompt under a shifting policy (StreamingLLM)
// in chunks it can make room for, so a prompt longer than the cache keeps
// what the policy keeps of it.
func (s *Session) prefillShifting(ctx context.Context, tokens []Token, o policies.DecodeOptions) error {
	chunk := s.be.chunk()
	if s.evict.policy.Chunk != nil {
		chunk = max(1, min(chunk, s.evict.policy.Chunk(o)))
	}
	if _, err := s.evict.ev.Start(nil, nil); err != nil {
		return err
	}
	for i := 0; i < len(tokens); i += chunk {
		part := tokens[i:min(i+chunk, len(tokens))]
		if err := s.makeRoom(len(part)); err != nil {
			return err
		}
		pos0 := int(s.nextPos)
		if err := s.decode(ctx, s.ctx, nil, part, len(tokens)); err != nil {
			return err
		}
		for j := range part {
			if _, err := s.evict.ev.Step(pos0+j, nil); err != nil {
				return err
			}
		}
	}
	s.recordHeld(len(tokens))
	s.stats.NKVBefore, s.stats.NKVAfter = hooks.PadNKV(min(len(tokens), s.NCtx())), hooks.PadNKV(s.used)
	return nil
}

// startEvicting hands a compressed prompt (or one kept whole, packed nil)
// to the decode-time policy for the generation: the kept positions (after
// a shifting policy closed their gaps: 0..k-1), the last one just decoded,
// with the scores the observation window's attention gave them (nil: none
// observed; keptScores), which only a policy that observes its steps uses.
func (s *Session) startEvicting(packed *hooks.CellMap, kept []int, scores []float32, o policies.DecodeOptions) error {
	e := s.evict
	ev, err := e.policy.New(o)
	if err != nil {
		return err
	}
	e.ev = ev
	if e.policy.Shifts {
		_, err := ev.Start(positions(0, len(kept)), nil)
		return err
	}
	if e.obs == nil {
		scores = nil
	} else {
		e.obs.SetCells(packed)
		if err := e.obs.Record([]int32{int32(kept[len(kept)-1])}); err != nil {
			return err
		}
	}
	evicted, err := ev.Start(kept, scores)
	if err != nil {
		return err
	}
	return s.evictPositions(evicted)
}

// makeRoom asks the decode-time policy (if any) for room for coming more
// tokens and evicts what it gives: for a shifting policy one run, cut with
// the later positions shifted down over it.
func (s *Session) makeRoom(coming int) error {
	if s.evict == nil || s.evict.ev == nil {
		return nil
	}
	t0 := time.Now()
	out := s.evict.ev.Room(coming)
	if len(out) == 0 {
		return nil
	}
	if !s.evict.policy.Shifts {
		return s.evictPositions(out)
	}
	runs := hooks.Runs(out)
	if len(runs) != 1 {
		return fmt.Errorf("%s: room of %d runs of positions; a shifting policy cuts one", s.evict.policy.Name, len(runs))
	}
	var last int32
	var err error
	s.withCtx(func() { last, err = s.sequence().Cut(runs[0].P0, runs[0].P1) })
	if err != nil {
		return fmt.Errorf("%s: %w", s.evict.policy.Name, err)
	}
	k := len(out)
	s.used -= k
	s.nextPos -= int32(k)
	if last != s.nextPos-1 {
		return fmt.Errorf("%s: after the shift llama.cpp's last position is %d, kvtrim expected %d", s.evict.policy.Name, last, s.nextPos-1)
	}
	s.stats.EvictedCells += k
	s.stats.EvictMs += msSince(t0)
	return nil
}

// step feeds the token just decoded at pos to the decode-time policy,
// with its attention row when the policy observes steps, and evicts what
// it drops.
func (s *Session) step(pos int32) error {
	e := s.evict
	var row []float32
	t0 := time.Now()
	if e.obs != nil {
		if err := e.obs.Record([]int32{pos}); err != nil {
			return err
		}
		e.positions = e.positions[:0]
		for _, p := range e.ev.Kept() {
			e.positions = append(e.positions, int32(p))
		}
		e.positions = append(e.positions, pos)
		row = slices.Grow(e.row[:0], len(e.positions))[:len(e.positions)]
		clear(row)
		e.row = row
		if err := e.obs.StepScores(e.positions, row); err != nil {
			return err
		}
	}
	t1 := time.Now()
	evicted, err := e.ev.Step(int(pos), row)
	if err != nil {
		return err
	}
	t2 := time.Now()
	if err := s.evictPositions(evicted); err != nil {
		return err
	}
	s.stats.ObserveMs += msBetween(t0, t1)
	s.stats.ScoreMs += msBetween(t1, t2)
	s.stats.EvictMs += msSince(t2)
	return nil
}

// evictPositions removes single positions (ascending) from the cache and
// the observer's cell map.
func (s *Session) evictPositions(positions []int) error {
	if len(positions) == 0 {
		return nil
	}
	q := s.sequence()
	if s.evict != nil && s.evict.obs != nil {
		q.Cells = s.evict.obs.Cells()
	}
	var err error
	s.withCtx(func() { err = q.EvictPositions(positions) })
	if err != nil {
		return err
	}
	s.used -= len(positions)
	s.stats.EvictedCells += len(positions)
	return nil
}

// sequence is the session's sequence in its context, without a cell map.
func (s *Session) sequence() hooks.Sequence {
	return hooks.Sequence{Mem: s.ctx.Memory(), ID: s.seq}
}

// positions is lo, lo+1, ..., hi-1.
func positions(lo, hi int) []int {
	p := make([]int, hi-lo)
	for i := range p {
		p[i] = lo + i
	}
	return p
}
