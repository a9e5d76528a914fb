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

// h2oPolicy is H2O as a decode-time policy: heavy hitters by accumulated
// attention plus a recent window, evicting while decoding. From the
// prompt on it is sized by Heavy and Recent or by a Ratio of the prompt,
// split evenly between them as the paper does.
var h2oPolicy = DecodePolicy{
	Name:          "h2o",
	Summary:       "heavy hitters by accumulated attention and a recent window, evicting while decoding (H2O)",
	Observes:      ObservesSteps,
	RatioOrCounts: true,
	Check: func(o DecodeOptions) error {
		switch {
		case o.EvictEvery < 0:
			return fmt.Errorf("evict-every %d: give a count >= 1 (0: 1)", o.EvictEvery)
		case !o.AsPolicy:
			if o.Heavy < 0 || o.Recent < 1 {
				return fmt.Errorf("--decode-policy h2o needs --heavy H >= 0 and --recent R >= 1")
			}
		case o.Ratio < 0 || o.Ratio > 1 || o.Ratio != o.Ratio:
			return fmt.Errorf("ratio %g: give a share in (0, 1]", o.Ratio)
		case o.Ratio > 0 && (o.Heavy > 0 || o.Recent > 0):
			return fmt.Errorf("give --heavy and --recent, or --ratio, not both")
		case o.Ratio == 0 && (o.Heavy < 0 || o.Recent < 1):
			return fmt.Errorf("h2o needs --heavy H >= 0 and --recent R >= 1, or --ratio")
		}
		return nil
	},
	Fit: func(o *DecodeOptions, budget int) {
		if o.Recent == 0 && (!o.AsPolicy || o.Ratio == 0) {
			o.Heavy, o.Recent = budget/2, max(1, budget-budget/2)
		}
	},
	Cells: func(o DecodeOptions) int {
		heavy, recent := h2oSizes(o)
		return heavy + recent
	},
	New: func(o DecodeOptions) (Evictor, error) {
		p, err := NewH2O(h2oSizes(o))
		if err != nil {
			return nil, err
		}
		return batched(h2oEvictor{p}, o.EvictEvery), nil
	},
}

// h2oSizes is H2O's heavy and recent counts: its own, or from the prompt
// on with a Ratio, the budget split evenly (at least one each).
func h2oSizes(o DecodeOptions) (heavy, recent int) {
	if !o.AsPolicy || o.Ratio == 0 {
		return o.Heavy, o.Recent
	}
	b := max(2, o.Budget)
	return b / 2, b - b/2
}

// h2oEvictor is H2O behind the Evictor interface.
type h2oEvictor struct{ p *H2O }

func (e h2oEvictor) Start(positions []int, scores []float32) ([]int, error) {
	if scores == nil {
		scores = make([]float32, len(positions))
	}
	return e.p.PrefillAt(positions, scores)
}

func (e h2oEvictor) Room(int) []int { return nil }

func (e h2oEvictor) Step(pos int, row []float32) ([]int, error) { return e.p.Step(pos, row) }

func (e h2oEvictor) Kept() []int { return e.p.Kept() }
