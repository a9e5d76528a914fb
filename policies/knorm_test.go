package policies

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// keysOf lays out per-position, per-head keys as Keys.
func keysOf(kvHeads, dim int, rows [][]float32) Keys {
	k := Keys{KVHeads: kvHeads, HeadDim: dim}
	for _, r := range rows {
		k.Rows = append(k.Rows, r...)
	}
	return k
}

func randomKeys(r *rand.Rand, n, kvHeads, dim int) Keys {
	k := Keys{KVHeads: kvHeads, HeadDim: dim, Rows: make([]float32, n*kvHeads*dim)}
	for i := range k.Rows {
		k.Rows[i] = float32(r.NormFloat64())
	}
	return k
}

// TestKnormKeepsLowestNorms: one head, by hand: the window and the
// lowest-norm keys before it.
func TestKnormKeepsLowestNorms(t *testing.T) {
	// Norms 5, 1, 3, 2, then the window (any).
	k := keysOf(1, 2, [][]float32{{3, 4}, {1, 0}, {0, 3}, {0, 2}, {9, 9}, {9, 9}})
	p := Prompt{Len: 6, Budget: 4, Window: 2, KVHeads: 1, Layers: 1, Agg: AggMax,
		Keys: func(int) (Keys, error) { return k, nil }}
	got, err := knorm.Select(p)
	if err != nil || !slices.Equal(got, []int{1, 3, 4, 5}) {
		t.Errorf("knorm kept %v (%v), want [1 3 4 5]", got, err)
	}
}

// TestKnormScoresMatchReference: knormScores against a float64 loop.
func TestKnormScoresMatchReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const n, heads, dim = 50, 4, 16
	k := randomKeys(r, n+5, heads, dim)
	got := make([]float32, heads*n)
	knormScores(k, n, got)
	for h := range heads {
		norms := make([]float64, n)
		top := 0.0
		for i := range n {
			s := 0.0
			for _, v := range k.Row(i, h) {
				s += float64(v) * float64(v)
			}
			norms[i] = math.Sqrt(s)
			top = max(top, norms[i])
		}
		for i := range n {
			if d := math.Abs(float64(got[h*n+i]) - (top - norms[i])); d > 1e-4 {
				t.Fatalf("head %d position %d: %g, want %g", h, i, got[h*n+i], top-norms[i])
			}
		}
	}
}

// TestKeyPoliciesRefuseBadPrompts: budgets outside the prompt, windows
// outside the budget, and keys of the wrong shape are errors.
func TestKeyPoliciesRefuseBadPrompts(t *testing.T) {
	k := randomKeys(rand.New(rand.NewPCG(3, 4)), 10, 2, 4)
	keys := func(int) (Keys, error) { return k, nil }
	for _, p := range []Prompt{
		{Len: 10, Budget: 10, Window: 2, KVHeads: 2, Layers: 1, Keys: keys},
		{Len: 10, Budget: 4, Window: 4, KVHeads: 2, Layers: 1, Keys: keys},
		{Len: 10, Budget: 4, Window: 2, KVHeads: 3, Layers: 1, Keys: keys},
		{Len: 12, Budget: 4, Window: 2, KVHeads: 2, Layers: 1, Keys: keys},
	} {
		for _, pol := range []Policy{knorm, keyDiff} {
			if _, err := pol.Select(p); err == nil {
				t.Errorf("%s %+v: no error", pol.Name, p)
			}
		}
	}
}
