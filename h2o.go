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

// h2oState is a session's H2O policy and the observer that feeds it. The
// session's own context carries the eval callback, since H2O observes every
// generated token's attention row.
type h2oState struct {
	obs    *hooks.Observer // it keeps the sequence's cell map
	policy *policies.H2O
	// pending holds positions H2O dropped that are still in the cache:
	// with EvictEvery > 1 they leave it that many at a time.
	pending []int
	// positions and row are stepH2O's buffers, reused token to token.
	positions []int32
	row       []float32
}

// newH2O makes the observer of an H2O session and fills copt's callback.
func newH2O(m *Model, copt *bindings.ContextOptions) (*h2oState, func()) {
	obs := newObserver(m, copt.FlashAttn)
	var release func()
	copt.EvalCallback, copt.EvalUserData, release = m.lib.EvalCallback(obs)
	return &h2oState{obs: obs}, release
}

// KeptPositions is the positions H2O keeps, ascending (nil for other
// policies).
func (s *Session) KeptPositions() []int {
	if s.h2o == nil || s.h2o.policy == nil {
		return nil
	}
	return s.h2o.policy.Kept()
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

// prefillH2O decodes the prompt one ubatch per decode call, adding each
// ubatch's attention columns to the positions' scores as it goes (no n x n
// matrix is held), then lets H2O evict down to heavy + recent. It is the
// prefill of an h2o session, and of a session whose decode policy is h2o
// when its prompt policy keeps the prompt whole.
func (s *Session) prefillH2O(ctx context.Context, tokens []Token, heavy, recent int) error {
	h := s.h2o
	n := len(tokens)
	if s.nextPos != 0 {
		return fmt.Errorf("h2o prefill: the session already holds a prompt")
	}
	if n > s.NCtx() {
		return fmt.Errorf("%w: %d tokens do not fit in a context of %d cells (-c); h2o evicts after the prompt, so raise -c", ErrPromptTooLong, n, s.NCtx())
	}
	policy, err := policies.NewH2O(heavy, recent)
	if err != nil {
		return err
	}
	h.policy = policy
	scores := make([]float32, n)
	o := &observing{obs: h.obs, release: func() {}}
	step := s.ctx.NUbatch()
	for i := 0; i < n; i += step {
		chunk := tokens[i:min(i+step, n)]
		h.obs.Arm(len(chunk))
		err := s.decode(ctx, s.ctx, o, chunk, n)
		h.obs.Disarm()
		if err != nil {
			return err
		}
		t0 := time.Now()
		att, err := h.obs.Votes(i + len(chunk))
		if err != nil {
			return err
		}
		columnScores(scores[:i+len(chunk)], att)
		s.stats.ObserveMs += msSince(t0)
	}
	t1 := time.Now()
	evicted := policy.Prefill(scores)
	t2 := time.Now()
	if err := s.evictPositions(evicted); err != nil {
		return err
	}
	st := &s.stats
	st.ScoreMs += msBetween(t1, t2)
	st.EvictMs += msSince(t2)
	s.recordHeld(n)
	st.NKVBefore, st.NKVAfter = hooks.PadNKV(n), hooks.PadNKV(int(h.obs.Cells().MaxCell()+1))
	return nil
}

// startH2O hands a compressed prompt to H2O for the generation: the moved
// cells (packed, their map) plus the last prompt token just decoded, scored
// by the attention the observation window gave them (att; nil: zeros).
func (s *Session) startH2O(packed *hooks.CellMap, kept []int, att []policies.WindowAttention) error {
	h := s.h2o
	h.obs.SetCells(packed)
	last := int32(kept[len(kept)-1])
	if err := h.obs.Record([]int32{last}); err != nil {
		return err
	}
	// The moved rows were loaded, not written by a decode: read them anew.
	for c := range packed.Len() {
		h.obs.Refresh(int64(c))
	}
	scores := make([]float32, len(kept))
	if att != nil {
		all := make([]float32, att[0].Cols)
		columnScores(all, att)
		for i, p := range kept {
			scores[i] = all[p]
		}
	}
	c := s.opt.Compression
	policy, err := policies.NewH2O(c.Heavy, c.Recent)
	if err != nil {
		return err
	}
	h.policy = policy
	evicted, err := policy.PrefillAt(kept, scores)
	if err != nil {
		return err
	}
	return s.evictPositions(evicted)
}

// stepH2O feeds the attention row of the token just decoded at pos to H2O
// and evicts what it drops.
func (s *Session) stepH2O(pos int32) error {
	h := s.h2o
	if err := h.obs.Record([]int32{pos}); err != nil {
		return err
	}
	t0 := time.Now()
	h.positions = h.positions[:0]
	for _, p := range h.policy.Kept() {
		h.positions = append(h.positions, int32(p))
	}
	h.positions = append(h.positions, pos)
	row := slices.Grow(h.row[:0], len(h.positions))[:len(h.positions)]
	clear(row)
	h.row = row
	if err := h.obs.StepScores(h.positions, row); err != nil {
		return err
	}
	t1 := time.Now()
	evicted, err := h.policy.Step(int(pos), row)
	if err != nil {
		return err
	}
	t2 := time.Now()
	h.pending = append(h.pending, evicted...)
	if len(h.pending) >= max(1, s.opt.Compression.EvictEvery) {
		slices.Sort(h.pending)
		if err := s.evictPositions(h.pending); err != nil {
			return err
		}
		h.pending = h.pending[:0]
	}
	s.stats.ObserveMs += msBetween(t0, t1)
	s.stats.ScoreMs += msBetween(t1, t2)
	s.stats.EvictMs += msSince(t2)
	return nil
}

// evictPositions removes single positions (ascending) from the cache and
// the cell map.
func (s *Session) evictPositions(positions []int) error {
	if err := (hooks.Sequence{Mem: s.ctx.Memory(), ID: s.seq, Cells: s.h2o.obs.Cells()}).EvictPositions(positions); err != nil {
		return err
	}
	s.used -= len(positions)
	s.stats.EvictedCells += len(positions)
	return nil
}
