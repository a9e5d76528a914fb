package hooks

import (
	"fmt"

	"github.com/kvtrim/kvtrim/bindings"
)

// Sequence is one sequence of a llama.cpp context, with the map of its
// positions to cells when one is kept: the one way kvtrim changes what a
// sequence holds. Evicting through it keeps the map in step, so callers
// never update the two by hand.
type Sequence struct {
	Mem   *bindings.Memory
	ID    bindings.SeqID
	Cells *CellMap // nil: no map is kept
}

// Evict removes the ranges with one llama_memory_seq_rm each and forgets
// them in the map. It stops at the first range llama.cpp refuses, which
// CheckEvictable rules out beforehand.
func (q Sequence) Evict(ranges []Range) error {
	for _, r := range ranges {
		if !q.Mem.SeqRm(q.ID, r.P0, r.P1) {
			return fmt.Errorf("evict positions [%d, %d): llama.cpp refused", r.P0, r.P1)
		}
		if q.Cells != nil {
			q.Cells.Remove(r.P0, r.P1)
		}
	}
	return nil
}

// EvictPositions removes single positions (ascending, distinct): one
// seq_rm per run of consecutive ones.
func (q Sequence) EvictPositions(positions []int) error { return q.Evict(Runs(positions)) }

// Shift adds delta to the positions in [p0, p1) (p1 < 0: to the end) with
// llama_memory_seq_add; llama.cpp re-rotates the keys at the next decode.
// A sequence whose map is kept cannot shift: the map is by position.
func (q Sequence) Shift(p0, p1, delta int32) error {
	if q.Cells != nil {
		return fmt.Errorf("shift positions [%d, %d) by %d: the sequence's cell map is by position", p0, p1, delta)
	}
	if delta != 0 {
		q.Mem.SeqAdd(q.ID, p0, p1, delta)
	}
	return nil
}

// Cut removes positions [p0, p1) and shifts every later one down over the
// gap, so that the positions stay contiguous: StreamingLLM's eviction. It
// returns the last position held afterwards.
func (q Sequence) Cut(p0, p1 int32) (last int32, err error) {
	if err := q.Evict([]Range{{p0, p1}}); err != nil {
		return 0, err
	}
	if err := q.Shift(p1, -1, p0-p1); err != nil {
		return 0, err
	}
	return q.Mem.SeqPosMax(q.ID), nil
}

// CloseGaps re-assigns the positions the sequence holds, kept (ascending),
// to 0..k-1, with one seq_add per run of consecutive positions.
func (q Sequence) CloseGaps(kept []int) error {
	to := int32(0)
	for _, r := range Runs(kept) {
		if err := q.Shift(r.P0, r.P1, to-r.P0); err != nil {
			return err
		}
		to += r.P1 - r.P0
	}
	return nil
}

// Runs groups sorted, distinct values (positions or cells) into runs of
// consecutive ones, [P0, P1) each, in order.
func Runs[T ~int | ~int32 | ~int64](sorted []T) []Range {
	var runs []Range
	for i := 0; i < len(sorted); {
		j := i + 1
		for j < len(sorted) && sorted[j] == sorted[j-1]+1 {
			j++
		}
		runs = append(runs, Range{int32(sorted[i]), int32(sorted[j-1] + 1)})
		i = j
	}
	return runs
}
