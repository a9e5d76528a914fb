package policies

import (
	"math"

	"github.com/viterin/vek/vek32"
)

// keyDiff is KeyDiff (2025): keys that differ most from the sequence's
// mean direction carry what the others do not, so the keys least similar
// (by cosine) to the mean of the normalised keys are kept. It reads keys
// only, as the cache holds them (after RoPE), as kvpress's KeyDiffPress
// reads its cache.
var keyDiff = Policy{
	Name:        "keydiff",
	Summary:     "the keys least similar to the mean key (KeyDiff)",
	Observes:    ObservesKeys,
	KeepsWindow: true,
	Options:     []string{"window", "aggregate"},
	Check:       checkAggregation,
	Select: func(p Prompt) ([]int, error) {
		return selectByLayerScores(p, func(il int, k Keys, n int, dst []float32) error {
			var sums []float32
			if p.Anchors != nil {
				sums = p.Anchors[il]
			}
			keyDiffScores(k, n, dst, sums)
			return nil
		})
	},
}

// keyDiffScores scores each KV head's positions by 1 - cos(key, anchor),
// anchor the mean of the head's normalised keys over the whole prompt
// (window included): in [0, 2], the least similar highest. sums, when set,
// is that sum already taken ([head][dim], Prompt.Anchors), over positions
// k may no longer hold.
func keyDiffScores(k Keys, n int, dst []float32, sums []float32) {
	anchor := make([]float32, k.HeadDim)
	for h := range k.KVHeads {
		if sums != nil {
			copy(anchor, sums[h*k.HeadDim:][:k.HeadDim])
		} else {
			clear(anchor)
			AddUnitKeys(anchor, k, h)
		}
		an := vek32.Norm(anchor)
		s := dst[h*n:][:n]
		for i := range n {
			row := k.Row(i, h)
			cos := float32(0)
			if norm := vek32.Norm(row); norm > 0 && an > 0 {
				cos = vek32.Dot(row, anchor) / (norm * an)
			}
			s[i] = 1 - float32(math.Max(-1, math.Min(1, float64(cos))))
		}
	}
}

// AddUnitKeys adds KV head h's keys of every position k holds, each
// normalised to length 1, to sum ([dim]): KeyDiff's anchor, which a
// chunked prefill sums chunk by chunk (Prompt.Anchors).
func AddUnitKeys(sum []float32, k Keys, h int) {
	unit := make([]float32, k.HeadDim)
	for i := range len(k.Rows) / (k.KVHeads * k.HeadDim) {
		row := k.Row(i, h)
		if norm := vek32.Norm(row); norm > 0 {
			vek32.MulNumber_Into(unit, row, 1/norm)
			vek32.Add_Inplace(sum, unit)
		}
	}
}
