package hooks

import (
	"fmt"

	"github.com/kvtrim/kvtrim/bindings"
)

// Range is a half-open range of positions [P0, P1).
type Range struct{ P0, P1 int32 }

// EvictRanges returns the ranges of [0, n) not in kept (ascending, no
// duplicates), in ascending order: what must be removed to keep kept.
func EvictRanges(kept []int, n int) []Range {
	var out []Range
	next := 0
	for _, k := range kept {
		if k > next {
			out = append(out, Range{int32(next), int32(k)})
		}
		next = k + 1
	}
	if next < n {
		out = append(out, Range{int32(next), int32(n)})
	}
	return out
}

// CheckEvictable says whether a model's memory can drop single positions:
// recurrent and hybrid models keep a state, and sliding-window models
// already drop positions of their own.
func CheckEvictable(m *bindings.Model) error {
	arch := m.Arch()
	switch {
	case m.IsRecurrent():
		return fmt.Errorf("model %s (architecture %s) is recurrent: its memory is a state, not one cell per position, so kvtrim cannot evict positions from it; use --policy none", m.Path, arch)
	case m.IsHybrid():
		return fmt.Errorf("model %s (architecture %s) is hybrid (attention and recurrent layers): kvtrim cannot evict positions from its recurrent state; use --policy none", m.Path, arch)
	case m.NSWA() > 0:
		return fmt.Errorf("model %s (architecture %s) uses sliding-window attention (window %d): its cache already drops positions, kvtrim does not evict from it yet; use --policy none", m.Path, arch, m.NSWA())
	}
	return nil
}

// Compact re-places seq's cells contiguously from cell 0 with a state round
// trip (Take, then Put into the same context), so that n_kv shrinks and
// decoding gets faster. Position shifts must come after: a pending seq_add
// does not survive the round trip.
func Compact(ctx *bindings.Context, seq bindings.SeqID, cells *CellMap, flags bindings.StateFlags) (*CellMap, error) {
	state, err := Take(ctx, seq, cells, flags)
	if err != nil {
		return nil, err
	}
	return Put(ctx, seq, state, cells, flags)
}

// Take saves sequence fromSeq's state from `from` (flags selects the _ext
// form: bindings.StateOnDevice keeps the data on the device), checks its
// cell positions against cells (when the host form makes them readable),
// and removes the sequence from `from`. Put loads the state, into another
// context (which may be made in between: the kept cells of a compressed
// prompt move from the observing context into the session's) or the same.
func Take(from *bindings.Context, fromSeq bindings.SeqID, cells *CellMap, flags bindings.StateFlags) ([]byte, error) {
	state, err := from.SeqState(fromSeq, flags)
	if err != nil {
		return nil, fmt.Errorf("compact: %w", err)
	}
	if flags == 0 {
		byCell, err := StatePositions(state, fromSeq)
		if err != nil {
			return nil, fmt.Errorf("compact: %w", err)
		}
		mem := from.Memory()
		if err := cells.Verify(byCell, mem.SeqPosMin(fromSeq), mem.SeqPosMax(fromSeq)); err != nil {
			return nil, fmt.Errorf("compact: before: %w", err)
		}
	}
	from.Memory().SeqRm(fromSeq, -1, -1)
	return state, nil
}

// Put loads a state Take saved (of the cells in cells) into sequence toSeq
// of `to`, packed from the start of its stream (a `to` of several
// sequences is taken to keep a stream for each, as kvtrim makes them: see
// Restream), and returns the map of the packed cells.
func Put(to *bindings.Context, toSeq bindings.SeqID, state []byte, cells *CellMap, flags bindings.StateFlags) (*CellMap, error) {
	if n := to.NSeqMax(); n > 1 && flags == 0 {
		var err error
		if state, err = Restream(state, n); err != nil {
			return nil, fmt.Errorf("compact: %w", err)
		}
	}
	if err := to.SetSeqState(toSeq, state, flags); err != nil {
		return nil, fmt.Errorf("compact: %w", err)
	}
	packed := cells.Compacted()
	pos := packed.Positions()
	mem := to.Memory()
	if n := len(pos); n > 0 && (mem.SeqPosMin(toSeq) != pos[0] || mem.SeqPosMax(toSeq) != pos[n-1]) {
		return nil, fmt.Errorf("compact: llama.cpp holds [%d, %d] after loading the state, kvtrim expected [%d, %d]",
			mem.SeqPosMin(toSeq), mem.SeqPosMax(toSeq), pos[0], pos[n-1])
	}
	return packed, nil
}

// recordCells adds the cells a decode wrote (from Observer.TakeCells) for
// the batch's positions to cells.
func recordCells(cells *CellMap, positions []int32, written []int64) error {
	if len(written) != len(positions) {
		return fmt.Errorf("cell map: the decode wrote %d cells for %d tokens", len(written), len(positions))
	}
	for i, p := range positions {
		cells.Set(p, int32(written[i]))
	}
	return nil
}

// PadNKV is the n_kv llama.cpp attends over when cells up to maxCell are
// used: rounded up to 256.
func PadNKV(usedCells int) int {
	const pad = 256
	return (usedCells + pad - 1) / pad * pad
}
