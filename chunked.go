package kvtrim

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/kvtrim/kvtrim/hooks"
	"github.com/kvtrim/kvtrim/policies"
)

// prefillChunks decodes the head of a compressed prompt (tokens: all of
// it but the last chunk) into the observing context chunk tokens at a
// time, and after each evicts the cells held back to the budget, as the
// chunk policy chooses: so the context never holds more than budget +
// chunk of the prompt's cells. total is the prompt's length; cfg is the
// compression's SnapKV settings for its budget.
func (s *Session) prefillChunks(ctx context.Context, o *observing, tokens []Token, total int, comp Compression, cfg policies.SnapKVConfig, chunk int) error {
	pol, err := comp.chunkPolicy()
	if err != nil {
		return err
	}
	budget := cfg.Budget
	heavy := pol.Name == ChunkH2O
	var acc []float32 // h2o: each position's accumulated votes
	if heavy {
		acc = make([]float32, total)
	}
	for start := 0; start < len(tokens); start += chunk {
		seg := tokens[start:min(start+chunk, len(tokens))]
		// The chunk's own last rows vote for what it keeps, as SnapKV's
		// window does over a whole prompt; for h2o, all of them.
		window := min(cfg.Window, len(seg))
		switch {
		case heavy:
			o.obs.Arm(len(seg))
		case pol.Observes == policies.ObservesWindow:
			o.obs.Arm(window)
		}
		err := s.decode(ctx, o.ctx, o, seg, total)
		o.obs.Disarm()
		if err == nil {
			err = o.addAnchors(s.nextPos-int32(len(seg)), s.nextPos)
		}
		if err != nil {
			return err
		}
		s.notePeak(s.used)
		if s.used <= budget {
			continue
		}
		t0 := time.Now()
		held := o.obs.Cells().Positions()
		// The heads' and layers' scores of an eviction between chunks are
		// summed (normalised), not maxed as the final choice's may be: it
		// kept as many or more pass keys and recall answers at every
		// chunk size measured (docs/CHUNKED.md).
		in := policies.Prompt{
			Len: len(held), End: int(s.nextPos), Budget: budget, Window: window, KVHeads: s.model.NHeadKV(), Layers: s.model.NLayer(),
			Kernel: cfg.Kernel, Pool: cfg.Pool, Agg: policies.AggNormSum, Seed: comp.Seed,
		}
		var cols []int
		var t1 time.Time
		if heavy {
			att, err := o.obs.VotesOver(held)
			if err != nil {
				return fmt.Errorf("chunk at %d: %w", start, err)
			}
			t1 = time.Now()
			cols = heavyHitters(att, held, acc, budget, window)
		} else {
			if err := s.observeFor(o, pol, &in, held, 0); err != nil {
				return fmt.Errorf("chunk at %d: %w", start, err)
			}
			t1 = time.Now()
			if cols, err = pol.Select(in); err != nil {
				return fmt.Errorf("chunk at %d: %s: %w", start, pol.Name, err)
			}
		}
		t2 := time.Now()
		drop := make([]int, 0, len(held)-len(cols))
		for i, p := range held {
			if _, kept := slices.BinarySearch(cols, i); !kept {
				drop = append(drop, int(p))
			}
		}
		o.locked(func() {
			err = hooks.Sequence{Mem: o.ctx.Memory(), ID: s.seqIn(o.ctx), Cells: o.obs.Cells()}.EvictPositions(drop)
		})
		if err != nil {
			return fmt.Errorf("chunk at %d: %w", start, err)
		}
		s.used -= len(drop)
		st := &s.stats
		st.Chunks++
		st.ObserveMs += msBetween(t0, t1)
		st.ScoreMs += msBetween(t1, t2)
		st.EvictMs += msSince(t2)
	}
	return nil
}

// heavyHitters adds the votes of a chunk's rows (att, over the held
// positions' columns) to each position's accumulated score, a position's
// votes being its largest over the layers' heads (as SnapKV's max
// aggregation), and returns the columns to keep: the last window ones and
// the budget-window with the highest accumulated scores, ascending.
func heavyHitters(att []policies.WindowAttention, held []int32, acc []float32, budget, window int) []int {
	n := len(held)
	best := make([]float32, n)
	for _, a := range att {
		for h := range a.Heads {
			for r := range a.Rows {
				row := a.Data[(h*a.Rows+r)*a.Cols:][:a.Cols]
				for c, v := range row {
					best[c] = max(best[c], v)
				}
			}
		}
	}
	for c, p := range held {
		acc[p] += best[c]
	}
	scores := make([]float32, n-window)
	for c := range scores {
		scores[c] = acc[held[c]]
	}
	cols := policies.TopK(scores, budget-window)
	for c := n - window; c < n; c++ {
		cols = append(cols, c)
	}
	return cols
}

// setAside frees the session's own context while a compressed prompt is
// built in an observing one, and returns the function that makes it again,
// empty, for the kept cells; nil when the context is not the session's to
// free (a group's shared one, or a host's).
func (s *Session) setAside() (reopen func() error) {
	if s.attached || s.be.shared() {
		return nil
	}
	s.ctx.Close()
	s.ctx = nil
	return func() error {
		ctx, err := s.model.NewContext(s.copt)
		if err != nil {
			return fmt.Errorf("make the session's context again for the kept cells: %w", err)
		}
		s.ctx = ctx
		return nil
	}
}

// keptScores are the kept columns' scores summed over the layers' window
// attention (att, over the columns the policy chose among): what a
// decode-time policy that goes on from a prompt-time one starts from.
func keptScores(att []policies.WindowAttention, cols []int) []float32 {
	all := make([]float32, att[0].Cols)
	columnScores(all, att)
	out := make([]float32, len(cols))
	for i, c := range cols {
		out[i] = all[c]
	}
	return out
}

// notePeak records that the session's contexts hold cells cells at once
// (besides what its own holds), for Stats.KVBytesPeak.
func (s *Session) notePeak(cells int) {
	st := &s.stats
	st.KVBytesPeak = max(st.KVBytesPeak, int64(cells)*s.kvBytesPerCell())
}
