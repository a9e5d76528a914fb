package policies

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestKeyDiffKeepsOddKeys: one head, by hand: keys along the common
// direction go, the ones pointing elsewhere stay.
func TestKeyDiffKeepsOddKeys(t *testing.T) {
	k := keysOf(1, 2, [][]float32{{1, 0}, {0, 1}, {2, 0}, {-1, 0.1}, {1, 0}, {3, 0}, {1, 0}})
	p := Prompt{Len: 7, Budget: 4, Window: 2, KVHeads: 1, Layers: 1, Agg: AggMax,
		Keys: func(int) (Keys, error) { return k, nil }}
	got, err := keyDiff.Select(p)
	if err != nil || !slices.Equal(got, []int{1, 3, 5, 6}) {
		t.Errorf("keydiff kept %v (%v), want [1 3 5 6]", got, err)
	}
}

// TestKeyDiffScoresMatchReference: keyDiffScores against a float64 loop.
func TestKeyDiffScoresMatchReference(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const n, window, heads, dim = 40, 6, 2, 8
	k := randomKeys(r, n+window, heads, dim)
	got := make([]float32, heads*n)
	keyDiffScores(k, n, got, nil)
	norm := func(v []float64) float64 {
		s := 0.0
		for _, x := range v {
			s += x * x
		}
		return math.Sqrt(s)
	}
	for h := range heads {
		anchor := make([]float64, dim)
		for i := range n + window {
			row := make([]float64, dim)
			for j, v := range k.Row(i, h) {
				row[j] = float64(v)
			}
			nr := norm(row)
			for j := range anchor {
				anchor[j] += row[j] / nr
			}
		}
		for i := range n {
			dot, row := 0.0, make([]float64, dim)
			for j, v := range k.Row(i, h) {
				row[j] = float64(v)
				dot += row[j] * anchor[j]
			}
			want := 1 - dot/(norm(row)*norm(anchor))
			if d := math.Abs(float64(got[h*n+i]) - want); d > 1e-4 {
				t.Fatalf("head %d position %d: %g, want %g", h, i, got[h*n+i], want)
			}
		}
	}
}

// TestKeyDiffAnchors: Prompt.Anchors summed over the held keys chooses as
// the keys' own mean does; anchors from positions no longer held (a
// chunked prefill's evicted ones, mostly along the second axis) make keys
// along that axis the common ones, which then go.
func TestKeyDiffAnchors(t *testing.T) {
	k := keysOf(1, 2, [][]float32{{1, 0}, {0, 1}, {2, 0}, {-1, 0.1}, {1, 0}, {3, 0}, {1, 0}})
	p := Prompt{Len: 7, Budget: 4, Window: 2, KVHeads: 1, Layers: 1, Agg: AggMax,
		Keys: func(int) (Keys, error) { return k, nil }}
	own := make([]float32, 2)
	AddUnitKeys(own, k, 0)
	p.Anchors = [][]float32{own}
	if got, err := keyDiff.Select(p); err != nil || !slices.Equal(got, []int{1, 3, 5, 6}) {
		t.Errorf("anchors of the held keys: kept %v (%v), want [1 3 5 6]", got, err)
	}
	p.Anchors = [][]float32{{own[0], own[1] + 50}}
	if got, err := keyDiff.Select(p); err != nil || slices.Contains(got, 1) {
		t.Errorf("anchors along the second axis: kept %v (%v), want position 1 gone", got, err)
	}
}
