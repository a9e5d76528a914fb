package policies

import (
	"fmt"
	"slices"
)

// This file is H2O's mask simulation: over a whole causal prompt attention,
// which key columns each query row would still see. Nothing is evicted; it
// is the paper's way of measuring the policy, and the golden kind h2o_mask.

// HeavyHitterMask returns H2O's local heavy-hitter mask of one head's n x n
// row-softmaxed causal attention attn (attn[i*n+j]): for each row i, the
// kept key columns, ascending. heavy <= 0 gives nil (no mask).
//
// Rows i < heavy keep columns 0 .. min(heavy, n)-1 (not causal, as in the
// paper's code). Then acc starts as the sum of those rows, and for each row
// i >= heavy: row i keeps the heavy-1 columns with the largest acc plus i
// itself, and acc becomes acc + attn[i] on the kept columns and 0 elsewhere.
func HeavyHitterMask(attn []float32, n, heavy int) [][]int {
	if len(attn) != n*n {
		panic(fmt.Sprintf("policies.HeavyHitterMask: %d values for %dx%d", len(attn), n, n))
	}
	if heavy <= 0 {
		return nil
	}
	mask := make([][]int, n)
	first := min(heavy, n)
	acc := make([]float32, n)
	for i := range first {
		mask[i] = positions(0, first)
		addFloat32(acc, attn[i*n:])
	}
	keep := make([]bool, n)
	scratch := make([]float32, n)
	for i := first; i < n; i++ {
		row := topK(acc, heavy-1, scratch, nil)
		if !slices.Contains(row, i) {
			row = append(row, i)
			slices.Sort(row)
		}
		mask[i] = row
		for _, j := range row {
			keep[j] = true
		}
		for j, a := range attn[i*n : (i+1)*n] {
			if keep[j] {
				acc[j] += a
			} else {
				acc[j] = 0
			}
			keep[j] = false
		}
	}
	return mask
}

// CombineRecent adds H2O's recent band to a mask and makes it causal: row
// i keeps (heavy[i] ∪ [max(0, i-recent), i]) ∩ [0, i], so the band holds
// recent+1 columns, the diagonal included. heavy may be nil (the band
// alone); otherwise it has n rows.
func CombineRecent(heavy [][]int, n, recent int) [][]int {
	mask := make([][]int, n)
	for i := range mask {
		var h []int
		if heavy != nil {
			h = heavy[i]
		}
		mask[i] = unionWithBand(h, max(0, i-recent), i)
	}
	return mask
}

// GlobalHeavyMask is H2O's "global statistics" variant: the heavy columns
// with the largest column sums (ascending), the same for every row, and the
// mask whose row i keeps (heavySet ∪ [i-recent, i+recent]) ∩ [0, i]. It
// fails when heavy is negative or larger than n = len(columnSums).
func GlobalHeavyMask(columnSums []float32, heavy, recent int) (heavySet []int, mask [][]int, err error) {
	n := len(columnSums)
	if heavy < 0 || heavy > n {
		return nil, nil, fmt.Errorf("h2o: heavy budget %d is outside [0, %d]", heavy, n)
	}
	heavySet = TopK(columnSums, heavy)
	mask = make([][]int, n)
	for i := range mask {
		mask[i] = unionWithBand(heavySet, max(0, i-recent), i)
	}
	return heavySet, mask, nil
}

// unionWithBand returns the ascending union of the members of the ascending
// set that are <= hi and the band lo .. hi.
func unionWithBand(set []int, lo, hi int) []int {
	out := make([]int, 0, len(set)+hi-lo+1)
	for _, j := range set {
		if j < lo {
			out = append(out, j)
		}
	}
	return append(out, positions(lo, hi+1)...)
}
