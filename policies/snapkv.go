package policies

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Pooling is SnapKV's 1-D pooling of the window's votes.
type Pooling int

const (
	// PoolAvg averages the kernel neighbours, padding counted as zeros.
	PoolAvg Pooling = iota
	// PoolMax takes the largest in-range neighbour.
	PoolMax
)

// ParsePooling reads "avg" or "avgpool", "max" or "maxpool" (any case).
func ParsePooling(s string) (Pooling, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "avg", "avgpool":
		return PoolAvg, nil
	case "max", "maxpool":
		return PoolMax, nil
	}
	return 0, fmt.Errorf("unknown pooling %q (want avg or max)", s)
}

// String returns "avg" or "max".
func (p Pooling) String() string {
	switch p {
	case PoolAvg:
		return "avg"
	case PoolMax:
		return "max"
	}
	return fmt.Sprintf("Pooling(%d)", int(p))
}

// Aggregation turns the per-head scores of all layers into one score per
// position, because a llama.cpp cell serves every head and layer. Every
// aggregation but AggSum and AggMaxRaw starts from a head's (or KV group's)
// pooled vote normalised to sum 1; a head whose pooled vote sums to zero is
// left out.
type Aggregation int

const (
	// AggNormSum sums the normalised pooled votes over layers and query
	// heads.
	AggNormSum Aggregation = iota
	// AggMax takes the largest normalised pooled vote over layers and query
	// heads.
	AggMax
	// AggVotes lets every (layer, query head) select its own top
	// Budget-Window positions by pooled vote; a position scores the number
	// of heads that selected it, ties broken by its AggNormSum score.
	AggVotes
	// AggKVSum sums, within each layer, the votes of the query heads that
	// share a KV head before pooling (golden ext_kv_head), then sums the
	// normalised pooled votes over layers and KV heads.
	AggKVSum
	// AggQuota emulates the paper's per-head selection in one shared set:
	// every (layer, query head) ranks positions by its own pooled vote, and
	// the heads take turns adding their next-best position not yet taken
	// until the budget is full. Heads that agree (local attention) do not
	// crowd out a head that attends somewhere else.
	AggQuota
	// AggSum sums the pooled votes over layers and query heads without
	// normalising them: a head's weight is the attention it gives the
	// positions before the window.
	AggSum
	// AggMaxRaw takes the largest pooled vote over layers and query heads
	// without normalising: a head that barely looks past the window (whose
	// normalised vote would magnify its noise) cannot outvote one that
	// retrieves from there.
	AggMaxRaw
)

// lastAggregation is the largest valid Aggregation.
const lastAggregation = AggMaxRaw

// ParseAggregation reads an Aggregation's name (any case).
func ParseAggregation(s string) (Aggregation, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	for a := Aggregation(0); a <= lastAggregation; a++ {
		if a.String() == name {
			return a, nil
		}
	}
	return 0, fmt.Errorf("unknown aggregation %q (want max, maxraw, sum, normsum, votes, kvsum or quota)", s)
}

// String returns the name ParseAggregation reads.
func (a Aggregation) String() string {
	switch a {
	case AggNormSum:
		return "normsum"
	case AggMax:
		return "max"
	case AggVotes:
		return "votes"
	case AggKVSum:
		return "kvsum"
	case AggQuota:
		return "quota"
	case AggSum:
		return "sum"
	case AggMaxRaw:
		return "maxraw"
	}
	return fmt.Sprintf("Aggregation(%d)", int(a))
}

// SnapKVConfig holds SnapKV's parameters.
type SnapKVConfig struct {
	// Window is the number of last prompt positions whose queries vote;
	// they are always kept.
	Window int
	// Budget is the number of positions kept, the window included.
	Budget int
	// Kernel is the odd pooling kernel size (1 means no pooling).
	Kernel int
	// Pool is the pooling kind.
	Pool Pooling
	// Agg is how SnapKV combines heads and layers.
	Agg Aggregation
}

// Validate checks the configuration for a prompt of promptLen positions. A
// budget of at least promptLen is valid: nothing is evicted then.
func (c SnapKVConfig) Validate(promptLen int) error {
	switch {
	case c.Window < 1:
		return fmt.Errorf("snapkv: window %d must be positive", c.Window)
	case c.Budget <= c.Window:
		return fmt.Errorf("snapkv: budget %d must be larger than the window %d", c.Budget, c.Window)
	case c.Kernel < 1:
		return fmt.Errorf("snapkv: kernel %d must be positive", c.Kernel)
	case c.Kernel%2 == 0:
		return fmt.Errorf("snapkv: kernel %d must be odd", c.Kernel)
	case c.Pool != PoolAvg && c.Pool != PoolMax:
		return fmt.Errorf("snapkv: unknown pooling %v", c.Pool)
	case c.Agg < 0 || c.Agg > lastAggregation:
		return fmt.Errorf("snapkv: unknown aggregation %v", c.Agg)
	case c.Window > promptLen:
		return fmt.Errorf("snapkv: window %d is longer than the prompt (%d positions)", c.Window, promptLen)
	}
	return nil
}

// SnapKV also accepts votes (WindowAttention.Votes, VotesFromQK): each
// layer with one row per head that already sums the window's rows, which
// gives the same selection in a window's fraction of the memory.

// SnapKV selects the positions to keep from the window attention of every
// layer; all layers must have Cols = prompt length and Rows = Window.
// nKVHeads (the model's KV heads; it must divide every layer's Heads) is
// used by AggKVSum only. It returns the kept positions ascending, min(Budget,
// Cols) of them: the top Budget-Window positions of [0, Cols-Window) by
// aggregated score (SnapKVScores; lowest positions first among equal scores),
// then the window itself. If Budget >= Cols it returns every position.
func SnapKV(cfg SnapKVConfig, layers []WindowAttention, nKVHeads int) ([]int, error) {
	if err := cfg.checkLayers(layers, nKVHeads); err != nil {
		return nil, err
	}
	cols := layers[0].Cols
	if cfg.Budget >= cols {
		return positions(0, cols), nil
	}
	scores := cfg.aggregate(layers, nKVHeads)
	return withWindow(topK(scores, cfg.Budget-cfg.Window, nil, nil), cols, cfg.Window), nil
}

// SnapKVScores checks its arguments as SnapKV does and returns the
// aggregated score of every position before the window, [0, Cols-Window).
// For AggNormSum and AggKVSum it is a sum of normalised pooled votes, for
// AggMax their maximum, and for AggVotes the number of heads that selected
// the position plus its AggNormSum score divided by (heads + 1), which is
// below 1, so the count decides first.
func SnapKVScores(cfg SnapKVConfig, layers []WindowAttention, nKVHeads int) ([]float64, error) {
	if err := cfg.checkLayers(layers, nKVHeads); err != nil {
		return nil, err
	}
	return cfg.aggregate(layers, nKVHeads), nil
}

// checkLayers validates the configuration and the layers' shapes for
// SnapKV.
func (c SnapKVConfig) checkLayers(layers []WindowAttention, nKVHeads int) error {
	if len(layers) == 0 {
		return fmt.Errorf("snapkv: no layers")
	}
	cols := layers[0].Cols
	if err := c.Validate(cols); err != nil {
		return err
	}
	for i, att := range layers {
		if err := c.checkLayer(att); err != nil {
			return fmt.Errorf("snapkv: layer %d: %w", i, err)
		}
		if att.Cols != cols {
			return fmt.Errorf("snapkv: layer %d has %d positions, layer 0 has %d", i, att.Cols, cols)
		}
		if c.Agg == AggKVSum && (nKVHeads < 1 || att.Heads%nKVHeads != 0) {
			return fmt.Errorf("snapkv: layer %d: %d query heads do not split into %d KV heads", i, att.Heads, nKVHeads)
		}
	}
	return nil
}

// checkLayer checks one layer's shape against the configuration.
func (c SnapKVConfig) checkLayer(att WindowAttention) error {
	if err := att.Validate(); err != nil {
		return err
	}
	// Rows == 1 holds votes already summed over the window (Votes).
	if att.Rows != c.Window && att.Rows != 1 {
		return fmt.Errorf("%d window rows, but the window is %d", att.Rows, c.Window)
	}
	return nil
}

// aggregate computes SnapKVScores for checked arguments.
func (c SnapKVConfig) aggregate(layers []WindowAttention, nKVHeads int) []float64 {
	n := layers[0].Cols - c.Window
	vote := make([]float32, n)
	pooled := make([]float32, n)
	score := make([]float64, n)
	var (
		counts  []int
		chosen  []int
		scratch []float32
	)
	if c.Agg == AggVotes || c.Agg == AggQuota {
		counts = make([]int, n)
		chosen = make([]int, 0, n)
		scratch = make([]float32, n)
	}
	var rankings [][]int // AggQuota: each head's choice, best first
	heads := 0
	for _, att := range layers {
		groupSize := 1
		if c.Agg == AggKVSum {
			groupSize = att.Heads / nKVHeads
		}
		for first := 0; first < att.Heads; first += groupSize {
			att.SumColumns(vote, first, groupSize)
			Pool1D(pooled, vote, c.Kernel, c.Pool)
			total := sumFloat64(pooled)
			if !(total > 0) {
				continue
			}
			heads++
			inv := 1 / total
			switch c.Agg {
			case AggSum, AggMaxRaw:
				inv = 1
			}
			if c.Agg == AggMax || c.Agg == AggMaxRaw {
				for j, v := range pooled {
					score[j] = max(score[j], float64(v)*inv)
				}
				continue
			}
			for j, v := range pooled {
				score[j] += float64(v) * inv
			}
			switch c.Agg {
			case AggVotes:
				chosen = topK(pooled, c.Budget-c.Window, scratch, chosen)
				for _, j := range chosen {
					counts[j]++
				}
			case AggQuota:
				chosen = topK(pooled, c.Budget-c.Window, scratch, chosen)
				ranked := slices.Clone(chosen)
				slices.SortStableFunc(ranked, func(a, b int) int { return cmp.Compare(pooled[b], pooled[a]) })
				rankings = append(rankings, ranked)
			}
		}
	}
	if c.Agg == AggQuota {
		return quotaScores(rankings, n)
	}
	if c.Agg == AggVotes {
		w := 1 / float64(heads+1)
		for j, s := range score {
			score[j] = float64(counts[j]) + s*w
		}
	}
	return score
}

// quotaScores merges the heads' rankings turn by turn: the position taken
// first scores highest; positions no head ranked score 0.
func quotaScores(rankings [][]int, n int) []float64 {
	score := make([]float64, n)
	next := float64(n)
	for depth := 0; ; depth++ {
		more := false
		for _, r := range rankings {
			if depth >= len(r) {
				continue
			}
			more = true
			if j := r[depth]; score[j] == 0 {
				score[j] = next
				next--
			}
		}
		if !more {
			return score
		}
	}
}

// sumFloat64 returns the sum of x in float64.
func sumFloat64(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v)
	}
	return s
}

// positions returns lo, lo+1, ..., hi-1.
func positions(lo, hi int) []int {
	p := make([]int, 0, max(hi-lo, 0))
	for i := lo; i < hi; i++ {
		p = append(p, i)
	}
	return p
}

// withWindow returns selected (ascending positions before the window)
// followed by the window positions [promptLen-window, promptLen).
func withWindow(selected []int, promptLen, window int) []int {
	kept := make([]int, 0, len(selected)+window)
	kept = append(kept, selected...)
	for i := promptLen - window; i < promptLen; i++ {
		kept = append(kept, i)
	}
	return kept
}
