package policies

import (
	"fmt"
	"slices"
)

// H2O is the heavy-hitter eviction policy of H2O's real-drop KV cache for one
// kept set: every cached position carries the attention it has received so
// far, and when the cache holds more than heavy+recent entries (NewH2O's
// arguments), the recent newest entries stay, the heavy best-scored of the
// older ones stay (the earliest positions first among equal scores), and the
// rest are dropped with their scores (scores are never reset or decayed).
//
// The paper keeps one set per head (one H2O per head, fed that head's
// rows). For llama.cpp, whose cells serve every head, feed one H2O the rows
// summed over heads (and layers).
type H2O struct {
	heavy, recent int
	kept          []int
	scores        []float32
}

// NewH2O returns an empty policy that keeps heavy heavy hitters and the
// recent most recent entries.
func NewH2O(heavy, recent int) (*H2O, error) {
	if heavy < 0 || recent < 0 || heavy+recent < 1 {
		return nil, fmt.Errorf("h2o: heavy %d and recent %d must be >= 0 with a positive sum", heavy, recent)
	}
	return &H2O{heavy: heavy, recent: recent}, nil
}

// CacheSize returns heavy+recent, the number of entries kept after an
// eviction.
func (p *H2O) CacheSize() int { return p.heavy + p.recent }

// Len returns the number of kept entries.
func (p *H2O) Len() int { return len(p.kept) }

// Kept returns a copy of the kept positions, ascending (cache slots in
// order).
func (p *H2O) Kept() []int { return slices.Clone(p.kept) }

// Scores returns a copy of the kept entries' accumulated scores, aligned
// with Kept.
func (p *H2O) Scores() []float32 { return slices.Clone(p.scores) }

// Prefill replaces the state by the prompt positions 0 .. len(scores)-1
// with their accumulated scores (for one head: the prompt attention's
// column sums, WindowAttention.ColumnSums), then evicts. It returns the
// evicted positions, ascending.
func (p *H2O) Prefill(scores []float32) []int {
	p.kept = positions(0, len(scores))
	p.scores = slices.Clone(scores)
	return p.evict()
}

// PrefillAt is Prefill for a cache that holds only some positions (after a
// prompt compression): positions ascending, scores aligned with them.
func (p *H2O) PrefillAt(positions []int, scores []float32) ([]int, error) {
	if len(positions) != len(scores) {
		return nil, fmt.Errorf("h2o: %d positions with %d scores", len(positions), len(scores))
	}
	if !slices.IsSorted(positions) {
		return nil, fmt.Errorf("h2o: positions are not ascending")
	}
	p.kept = slices.Clone(positions)
	p.scores = slices.Clone(scores)
	return p.evict(), nil
}

// Step records the decode step of the token at position pos, which must be
// after every kept position. row[s] is the attention to kept slot s for
// s < Len() and row[Len()] the token's attention to itself. The row is
// added to the scores, pos is appended with its own score, and the cache is
// evicted down to CacheSize. It returns the evicted positions, ascending.
func (p *H2O) Step(pos int, row []float32) ([]int, error) {
	if len(row) != len(p.kept)+1 {
		return nil, fmt.Errorf("h2o: step at %d: attention row has %d entries, want %d (kept entries + itself)", pos, len(row), len(p.kept)+1)
	}
	if n := len(p.kept); n > 0 && pos <= p.kept[n-1] {
		return nil, fmt.Errorf("h2o: step at %d is not after the last kept position %d", pos, p.kept[n-1])
	}
	addFloat32(p.scores, row)
	p.kept = append(p.kept, pos)
	p.scores = append(p.scores, row[len(row)-1])
	return p.evict(), nil
}

// evict keeps the last recent entries and the heavy best-scored of the
// others when there are more than CacheSize entries; it returns the dropped
// positions.
func (p *H2O) evict() []int {
	m := len(p.kept)
	if m <= p.CacheSize() {
		return nil
	}
	old := m - p.recent
	heavy := TopK(p.scores[:old], p.heavy)
	evicted := make([]int, 0, m-p.CacheSize())
	w, next := 0, 0
	for s := range old {
		if next < len(heavy) && heavy[next] == s {
			p.kept[w], p.scores[w] = p.kept[s], p.scores[s]
			w++
			next++
			continue
		}
		evicted = append(evicted, p.kept[s])
	}
	w += copy(p.kept[w:], p.kept[old:])
	copy(p.scores[w-p.recent:], p.scores[old:])
	p.kept, p.scores = p.kept[:w], p.scores[:w]
	return evicted
}
