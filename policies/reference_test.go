package policies

import (
	"math"
	"slices"
	"sort"
)

// The plain reference implementations the fast kernels and SnapKV are
// tested and benchmarked against. They favour the obvious loop and float64
// arithmetic over speed.

// dotRef is Dot as one left-to-right float64 sum.
func dotRef(a, b []float32) float32 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return float32(s)
}

// softmaxRef is Softmax with math.Exp and float64 throughout.
func softmaxRef(x []float32) {
	if len(x) == 0 {
		return
	}
	m := math.Inf(-1)
	for _, v := range x {
		m = max(m, float64(v))
	}
	e := make([]float64, len(x))
	var sum float64
	for i, v := range x {
		e[i] = math.Exp(float64(v) - m)
		sum += e[i]
	}
	for i := range x {
		x[i] = float32(e[i] / sum)
	}
}

// attentionRef is AttentionFromQK computed plainly in float64:
// [head][row][col], 0 after each row's own position.
func attentionRef(q []float32, heads, rows int, k []float32, kvHeads, cols, dim int) []float64 {
	out := make([]float64, heads*rows*cols)
	for h := range heads {
		kv := h / (heads / kvHeads)
		for r := range rows {
			row := out[(h*rows+r)*cols:][:cols]
			var sum float64
			for c := range cols - rows + r + 1 {
				var dot float64
				for d := range dim {
					dot += float64(q[(h*rows+r)*dim+d]) * float64(k[(kv*cols+c)*dim+d])
				}
				row[c] = math.Exp(dot / math.Sqrt(float64(dim)))
				sum += row[c]
			}
			for c := range row {
				row[c] /= sum
			}
		}
	}
	return out
}

// poolRef is Pool1D computed neighbour by neighbour.
func poolRef(dst, src []float32, kernel int, mode Pooling) {
	half := kernel / 2
	for i := range src {
		var sum float64
		m := float32(math.Inf(-1))
		for j := i - half; j <= i+half; j++ {
			if j < 0 || j >= len(src) {
				continue
			}
			sum += float64(src[j])
			m = max(m, src[j])
		}
		if mode == PoolAvg {
			dst[i] = float32(sum / float64(kernel))
		} else {
			dst[i] = m
		}
	}
}

// topKRef is TopK by a full sort: indices by score descending (NaN last),
// lower index first among equal scores, the first k, sorted by index.
func topKRef[T float32 | float64](scores []T, k int) []int {
	idx := positions(0, len(scores))
	slices.SortStableFunc(idx, func(a, b int) int {
		x, y := orderable(scores[a]), orderable(scores[b])
		switch {
		case x > y:
			return -1
		case x < y:
			return 1
		}
		return 0
	})
	top := slices.Clone(idx[:max(0, min(k, len(idx)))])
	slices.Sort(top)
	return top
}

// f16ToF32Ref converts one half-precision bit pattern by its definition,
// (-1)^s * 2^(e-15) * (1 + m/1024), or 2^-14 * m/1024 for e == 0.
func f16ToF32Ref(h uint16) float32 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	e := int(h>>10) & 0x1f
	m := float64(h & 0x3ff)
	switch e {
	case 0:
		return float32(sign * math.Ldexp(m/1024, -14))
	case 31:
		if m != 0 {
			return float32(math.NaN())
		}
		return float32(math.Inf(int(sign)))
	}
	return float32(sign * math.Ldexp(1+m/1024, e-15))
}

// snapKVScoresRef is SnapKVScores spelled out with the reference kernels.
func snapKVScoresRef(cfg SnapKVConfig, layers []WindowAttention, nKVHeads int) []float64 {
	n := layers[0].Cols - cfg.Window
	score := make([]float64, n)
	counts := make([]int, n)
	heads := 0
	var rankings [][]int
	for _, att := range layers {
		groupSize := 1
		if cfg.Agg == AggKVSum {
			groupSize = att.Heads / nKVHeads
		}
		for g := 0; g < att.Heads/groupSize; g++ {
			vote := make([]float32, n)
			for h := g * groupSize; h < (g+1)*groupSize; h++ {
				for r := 0; r < att.Rows; r++ {
					for j := range n {
						vote[j] += att.Data[(h*att.Rows+r)*att.Cols+j]
					}
				}
			}
			pooled := make([]float32, n)
			poolRef(pooled, vote, cfg.Kernel, cfg.Pool)
			var total float64
			for _, v := range pooled {
				total += float64(v)
			}
			if total <= 0 {
				continue
			}
			heads++
			if cfg.Agg == AggSum || cfg.Agg == AggMaxRaw {
				total = 1 // raw votes
			}
			for j, v := range pooled {
				norm := float64(v) / total
				if cfg.Agg == AggMax || cfg.Agg == AggMaxRaw {
					score[j] = max(score[j], norm)
				} else {
					score[j] += norm
				}
			}
			if cfg.Agg == AggVotes {
				for _, j := range topKRef(pooled, cfg.Budget-cfg.Window) {
					counts[j]++
				}
			}
			if cfg.Agg == AggQuota {
				// The head's whole ranking by a full sort, cut to its quota.
				order := make([]int, n)
				for j := range order {
					order[j] = j
				}
				sort.SliceStable(order, func(a, b int) bool { return pooled[order[a]] > pooled[order[b]] })
				rankings = append(rankings, order[:min(n, max(cfg.Budget-cfg.Window, 0))])
			}
		}
	}
	if cfg.Agg == AggQuota {
		quota := make([]float64, n)
		next := float64(n)
		for depth := 0; depth < n; depth++ {
			for _, r := range rankings {
				if depth < len(r) && quota[r[depth]] == 0 {
					quota[r[depth]] = next
					next--
				}
			}
		}
		return quota
	}
	if cfg.Agg == AggVotes {
		for j := range score {
			score[j] = float64(counts[j]) + score[j]/float64(heads+1)
		}
	}
	return score
}

// snapKVRef is SnapKV with the reference kernels (arguments assumed valid).
func snapKVRef(cfg SnapKVConfig, layers []WindowAttention, nKVHeads int) []int {
	cols := layers[0].Cols
	if cfg.Budget >= cols {
		return positions(0, cols)
	}
	sel := topKRef(snapKVScoresRef(cfg, layers, nKVHeads), cfg.Budget-cfg.Window)
	return withWindow(sel, cols, cfg.Window)
}
