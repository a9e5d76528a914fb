package policies

import (
	"math"
	"math/bits"
	"slices"
)

// TopK returns the indices of the k largest scores, sorted ascending by
// index. k <= 0 gives an empty slice; k >= len(scores) gives every index.
// Among scores equal to the k-th largest it takes the lowest indices. NaN
// counts as smaller than every number.
//
// It does not sort the scores: it finds the k-th largest value by selection
// (quickselect with a median-of-three pivot and a three-way partition,
// falling back to a sort of the remaining range after too many rounds), in
// O(len(scores)) average time, and then collects the indices in one pass.
func TopK(scores []float32, k int) []int {
	return topK(scores, k, nil, nil)
}

// topK is TopK for float32 or float64 scores. scratch (resized to
// len(scores)) and out (appended to from length 0) are reused when their
// capacity allows, so repeated calls need not allocate.
func topK[T float32 | float64](scores []T, k int, scratch []T, out []int) []int {
	n := len(scores)
	k = max(0, min(k, n))
	if out == nil {
		out = make([]int, 0, k)
	}
	out = out[:0]
	if k == 0 {
		return out
	}
	if k == n {
		for i := range n {
			out = append(out, i)
		}
		return out
	}
	vals := slices.Grow(scratch[:0], n)[:n]
	for i, v := range scores {
		vals[i] = orderable(v)
	}
	// The k-th largest value is the (n-k)-th smallest.
	pos := n - k
	kth := selectNth(vals, pos)
	// Everything larger than kth now lies after pos.
	above := 0
	for _, v := range vals[pos+1:] {
		if v > kth {
			above++
		}
	}
	equal := k - above
	for i, v := range scores {
		v = orderable(v)
		if v > kth {
			out = append(out, i)
		} else if v == kth && equal > 0 {
			out = append(out, i)
			equal--
		}
	}
	return out
}

// orderable maps NaN to -Inf so that scores are totally ordered.
func orderable[T float32 | float64](v T) T {
	if v != v {
		return T(math.Inf(-1))
	}
	return v
}

// selectNth rearranges vals so that vals[pos] holds the value it would have
// if vals were sorted ascending, every element before pos is <= it and every
// element after is >= it; it returns that value. vals must not hold NaN.
//
// Each round splits the range around a median-of-three pivot into values
// below it and the rest, and, when pos lies in the rest, splits that into
// values equal to the pivot and above it; the pivot's own run ends the
// search. After 2*log2(n) rounds the remaining range is sorted instead.
func selectNth[T float32 | float64](vals []T, pos int) T {
	lo, hi := 0, len(vals) // the range [lo, hi) holds pos
	for rounds := 2 * bits.Len(uint(len(vals))); hi-lo > 1; rounds-- {
		if rounds == 0 {
			slices.Sort(vals[lo:hi])
			return vals[pos]
		}
		pivot := medianOfThree(vals[lo], vals[lo+(hi-lo)/2], vals[hi-1])
		below := lo + partition(vals[lo:hi], pivot, false)
		if pos < below {
			hi = below
			continue
		}
		above := below + partition(vals[below:hi], pivot, true)
		if pos < above {
			return pivot
		}
		lo = above
	}
	return vals[pos]
}

// medianOfThree returns the middle one of a, b and c.
func medianOfThree[T float32 | float64](a, b, c T) T {
	if a > b {
		a, b = b, a
	}
	if b > c {
		b = c
	}
	return max(a, b)
}

// partition moves the values of v below pivot (with orEqual: not above
// it) to the front of v and returns their count. Every element is swapped
// with the front boundary, and the boundary advances only past a moved
// value, so the loop has no data-dependent branch.
func partition[T float32 | float64](v []T, pivot T, orEqual bool) int {
	n, takeEqual := 0, 0
	if orEqual {
		takeEqual = 1
	}
	for i, x := range v {
		v[i] = v[n]
		v[n] = x
		below, equal := 0, 0
		if x < pivot {
			below = 1
		}
		if x == pivot {
			equal = 1
		}
		n += below | equal&takeEqual
	}
	return n
}
