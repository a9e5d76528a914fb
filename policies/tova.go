package policies

import (
	"fmt"
	"slices"
)

// TOVA is Token Omission Via Attention (Oren et al. 2024, "Transformers
// are Multi-State RNNs"): the cache holds at most Budget positions, and
// when a decoded token makes it hold more, the position the current query
// attends to least (its attention averaged over heads) leaves. Unlike
// H2O, nothing accumulates: only the newest query's attention counts. The
// paper applies it during prefill too; here the prompt's last query
// chooses what stays of the prompt.
//
// The paper keeps a set per layer. A llama.cpp cell serves every layer
// and head, so TOVA here reads the row summed over layers and heads (the
// same order as their mean). The newest token always stays: its key is
// the one the next query sees first, and its own score is its attention
// to itself.
type TOVA struct {
	budget int
	kept   []int
}

// NewTOVA returns an empty TOVA cache of budget positions.
func NewTOVA(budget int) (*TOVA, error) {
	if budget < 1 {
		return nil, fmt.Errorf("tova: budget %d: give at least 1 cell", budget)
	}
	return &TOVA{budget: budget}, nil
}

// Start takes the positions the cache holds (ascending) and the attention
// the last prompt query gave each (nil: none observed, so the earliest
// leave first); it keeps the budget best, the last position always, and
// returns the others.
func (t *TOVA) Start(positions []int, scores []float32) ([]int, error) {
	if scores != nil && len(scores) != len(positions) {
		return nil, fmt.Errorf("tova: %d positions with %d scores", len(positions), len(scores))
	}
	if !slices.IsSorted(positions) {
		return nil, fmt.Errorf("tova: positions are not ascending")
	}
	t.kept = slices.Clone(positions)
	n := len(t.kept)
	if n <= t.budget {
		return nil, nil
	}
	if scores == nil {
		evicted := slices.Clone(t.kept[:n-t.budget])
		t.kept = slices.Delete(t.kept, 0, n-t.budget)
		return evicted, nil
	}
	best := TopK(scores[:n-1], t.budget-1) // ascending indices
	keep := make([]bool, n)
	keep[n-1] = true
	for _, i := range best {
		keep[i] = true
	}
	return t.drop(keep), nil
}

// Room makes none: TOVA evicts after a token's attention is known.
func (t *TOVA) Room(int) []int { return nil }

// Step records the token decoded at pos: row[s] is its attention to kept
// slot s for s < len(Kept()) and row[len(Kept())] to itself. Over the
// budget, the kept position (the new one aside) with the lowest attention
// leaves, the earliest among equals; it is returned.
func (t *TOVA) Step(pos int, row []float32) ([]int, error) {
	if len(row) != len(t.kept)+1 {
		return nil, fmt.Errorf("tova: step at %d: attention row has %d entries, want %d (kept entries + itself)", pos, len(row), len(t.kept)+1)
	}
	if n := len(t.kept); n > 0 && pos <= t.kept[n-1] {
		return nil, fmt.Errorf("tova: step at %d is not after the last kept position %d", pos, t.kept[n-1])
	}
	t.kept = append(t.kept, pos)
	var evicted []int
	for len(t.kept) > t.budget {
		// Usually one leaves; more only when a Start left the cache over.
		worst := 0
		for s := 1; s < len(t.kept)-1; s++ {
			if row[s] < row[worst] {
				worst = s
			}
		}
		evicted = append(evicted, t.kept[worst])
		t.kept = slices.Delete(t.kept, worst, worst+1)
		row = slices.Delete(row, worst, worst+1)
	}
	slices.Sort(evicted)
	return evicted, nil
}

// Kept is the positions held, ascending.
func (t *TOVA) Kept() []int { return slices.Clone(t.kept) }

// drop keeps the slots keep marks and returns the positions of the others.
func (t *TOVA) drop(keep []bool) []int {
	var evicted []int
	w := 0
	for s, p := range t.kept {
		if keep[s] {
			t.kept[w] = p
			w++
		} else {
			evicted = append(evicted, p)
		}
	}
	t.kept = t.kept[:w]
	return evicted
}

// tovaPolicy is TOVA as a decode-time policy. From the prompt on it keeps
// a Budget (or Ratio of the prompt) chosen by the prompt's last query;
// after a prompt-time policy it keeps the cells that policy kept.
var tovaPolicy = DecodePolicy{
	Name:       "tova",
	Summary:    "the positions the current query attends to most, evicting while decoding (TOVA)",
	Observes:   ObservesSteps,
	PromptRows: 1,
	Check: func(o DecodeOptions) error {
		switch {
		case o.EvictEvery < 0:
			return fmt.Errorf("evict-every %d: give a count >= 1 (0: 1)", o.EvictEvery)
		case !o.AsPolicy:
			return nil // it keeps what the prompt policy kept
		case o.Budget < 0:
			return fmt.Errorf("budget %d: give a number of cells > 0", o.Budget)
		case o.Budget > 0 && o.Ratio > 0:
			return fmt.Errorf("give --budget or --ratio, not both")
		case o.Budget == 0 && (o.Ratio <= 0 || o.Ratio > 1 || o.Ratio != o.Ratio):
			return fmt.Errorf("tova needs --budget N (cells) or --ratio R in (0, 1]")
		}
		return nil
	},
	Cells: func(o DecodeOptions) int { return o.Budget },
	New: func(o DecodeOptions) (Evictor, error) {
		t, err := NewTOVA(o.Budget)
		if err != nil {
			return nil, err
		}
		return batched(t, o.EvictEvery), nil
	},
}
