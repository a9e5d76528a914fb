package policies

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestParsePoolingAndAggregation(t *testing.T) {
	for in, want := range map[string]Pooling{"avg": PoolAvg, "avgpool": PoolAvg, "MaxPool": PoolMax, " max ": PoolMax} {
		if got, err := ParsePooling(in); err != nil || got != want {
			t.Errorf("ParsePooling(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParsePooling("mean"); err == nil {
		t.Error(`ParsePooling("mean"): no error`)
	}
	for _, a := range []Aggregation{AggNormSum, AggMax, AggVotes, AggKVSum, AggQuota, AggSum, AggMaxRaw} {
		if got, err := ParseAggregation(a.String()); err != nil || got != a {
			t.Errorf("ParseAggregation(%q) = %v, %v", a.String(), got, err)
		}
	}
	if _, err := ParseAggregation("mean"); err == nil {
		t.Error(`ParseAggregation("mean"): no error`)
	}
	if s := Aggregation(9).String(); s != "Aggregation(9)" {
		t.Errorf("Aggregation(9).String() = %q", s)
	}
}

func TestSnapKVConfigValidate(t *testing.T) {
	ok := SnapKVConfig{Window: 8, Budget: 24, Kernel: 5}
	with := func(edit func(*SnapKVConfig)) SnapKVConfig {
		c := ok
		edit(&c)
		return c
	}
	for _, tc := range []struct {
		cfg       SnapKVConfig
		promptLen int
		wantErr   string // empty: valid
	}{
		{ok, 64, ""},
		{ok, 8, ""},  // the whole prompt is the window
		{ok, 20, ""}, // budget >= prompt: nothing to evict
		{with(func(c *SnapKVConfig) { c.Budget = 8 }), 64, "budget 8 must be larger than the window 8"},
		{with(func(c *SnapKVConfig) { c.Budget = 3 }), 64, "budget 3 must be larger than the window 8"},
		{with(func(c *SnapKVConfig) { c.Window = 0 }), 64, "window 0 must be positive"},
		{with(func(c *SnapKVConfig) { c.Kernel = 0 }), 64, "kernel 0 must be positive"},
		{with(func(c *SnapKVConfig) { c.Kernel = -3 }), 64, "kernel -3 must be positive"},
		{with(func(c *SnapKVConfig) { c.Kernel = 4 }), 64, "kernel 4 must be odd"},
		{with(func(c *SnapKVConfig) { c.Pool = 2 }), 64, "unknown pooling Pooling(2)"},
		{with(func(c *SnapKVConfig) { c.Agg = lastAggregation + 1 }), 64, "unknown aggregation Aggregation(7)"},
		{with(func(c *SnapKVConfig) { c.Agg = -1 }), 64, "unknown aggregation Aggregation(-1)"},
		{ok, 7, "window 8 is longer than the prompt (7 positions)"},
	} {
		err := tc.cfg.Validate(tc.promptLen)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%+v, prompt %d: %v", tc.cfg, tc.promptLen, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%+v, prompt %d: error %v, want one containing %q", tc.cfg, tc.promptLen, err, tc.wantErr)
		}
	}
}

// handAttention builds a one-row window attention whose prefix columns are
// the given per-head values and whose last column (the window itself) takes
// the rest of each row's probability mass.
func handAttention(prefix [][]float32) WindowAttention {
	cols := len(prefix[0]) + 1
	att := WindowAttention{Heads: len(prefix), Rows: 1, Cols: cols}
	for _, p := range prefix {
		var sum float32
		for _, v := range p {
			sum += v
		}
		att.Data = append(att.Data, p...)
		att.Data = append(att.Data, 1-sum)
	}
	return att
}

func TestSnapKVAggregationsByHand(t *testing.T) {
	// Three heads over five prefix positions, each normalised to sum 1:
	//   h0 [.30 .25 .00 .45 .00] selects {0, 3}
	//   h1 [.30 .25 .00 .00 .45] selects {0, 4}
	//   h2 [.00 .25 .30 .00 .45] selects {2, 4}
	// normsum [.60 .75 .30 .45 .90] -> {1, 4}; max [.30 .25 .30 .45 .45]
	// -> {3, 4}; votes: counts [2 0 1 1 2] -> {0, 4}; quota: the heads'
	// first choices in turn are 3, 4, (4 again) -> {3, 4}.
	att := handAttention([][]float32{
		{0.3, 0.25, 0, 0.45, 0},
		{0.3, 0.25, 0, 0, 0.45},
		{0, 0.25, 0.3, 0, 0.45},
	})
	for agg, want := range map[Aggregation][]int{
		AggNormSum: {1, 4, 5},
		AggMax:     {3, 4, 5},
		AggVotes:   {0, 4, 5},
		AggQuota:   {3, 4, 5},
		AggKVSum:   {1, 4, 5}, // three KV heads: one head per group, as normsum
		AggSum:     {1, 4, 5}, // every head's votes already sum to 1
		AggMaxRaw:  {3, 4, 5},
	} {
		cfg := SnapKVConfig{Window: 1, Budget: 3, Kernel: 1, Pool: PoolAvg, Agg: agg}
		got, err := SnapKV(cfg, []WindowAttention{att}, 3)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%v: kept %v, %v; want %v", agg, got, err, want)
		}
	}
}

func TestSnapKVKVSumGQA(t *testing.T) {
	// Four query heads share two KV heads. Head 0 puts little mass before
	// the window, so per-head normalisation (normsum, max) magnifies it,
	// while summing the group's votes first (kvsum) or not normalising
	// (sum, maxraw) does not:
	//   normsum: h0 [1 0 0 0 0], h1 [0 .22 .78 0 0], h2 [0 0 0 1 0],
	//            h3 [0 0 0 .2 .8] -> [1 .22 .78 1.2 .8] -> {0, 3}
	//   kvsum:   group 0 [.1 .2 .7 0 0], group 1 [0 0 0 .6 .4]
	//            -> [.1 .2 .7 .6 .4] -> {2, 3}
	//   max:     [1 .22 .78 1 .8] -> {0, 3}
	//   maxraw:  [.1 .2 .7 .5 .4] -> {2, 3}; sum: as kvsum
	att := handAttention([][]float32{
		{0.1, 0, 0, 0, 0},
		{0, 0.2, 0.7, 0, 0},
		{0, 0, 0, 0.5, 0},
		{0, 0, 0, 0.1, 0.4},
	})
	layers := []WindowAttention{att, att}
	cfg := SnapKVConfig{Window: 1, Budget: 3, Kernel: 1, Pool: PoolAvg}
	for _, tc := range []struct {
		agg      Aggregation
		kvHeads  int
		wantKept []int
	}{
		{AggNormSum, 2, []int{0, 3, 5}},
		{AggKVSum, 2, []int{2, 3, 5}},
		{AggKVSum, 4, []int{0, 3, 5}}, // groups of one: normsum
		{AggMax, 2, []int{0, 3, 5}},
		{AggMaxRaw, 2, []int{2, 3, 5}},
		{AggSum, 2, []int{2, 3, 5}},
	} {
		cfg.Agg = tc.agg
		got, err := SnapKV(cfg, layers, tc.kvHeads)
		if err != nil || !slices.Equal(got, tc.wantKept) {
			t.Errorf("%v with %d KV heads: kept %v, %v; want %v", tc.agg, tc.kvHeads, got, err, tc.wantKept)
		}
	}
	cfg.Agg = AggKVSum
	if _, err := SnapKV(cfg, layers, 3); err == nil {
		t.Error("kvsum with 4 query heads and 3 KV heads: no error")
	}
	if _, err := SnapKV(cfg, layers, 0); err == nil {
		t.Error("kvsum with 0 KV heads: no error")
	}
}

func TestSnapKVShapeErrors(t *testing.T) {
	cfg := SnapKVConfig{Window: 2, Budget: 4, Kernel: 3}
	good := WindowAttention{Heads: 2, Rows: 2, Cols: 10, Data: make([]float32, 40)}
	for name, layers := range map[string][]WindowAttention{
		"no layers":      nil,
		"rows != window": {{Heads: 2, Rows: 3, Cols: 10, Data: make([]float32, 60)}},
		"short data":     {{Heads: 2, Rows: 2, Cols: 10, Data: make([]float32, 39)}},
		"cols differ":    {good, {Heads: 2, Rows: 2, Cols: 11, Data: make([]float32, 44)}},
		"no heads":       {{Heads: 0, Rows: 2, Cols: 10}},
	} {
		if _, err := SnapKV(cfg, layers, 1); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := cfg.SelectLayer(good, 3); err == nil {
		t.Error("SelectLayer with groups of 3 over 2 heads: no error")
	}
	if got, err := SnapKV(SnapKVConfig{Window: 2, Budget: 10, Kernel: 3}, []WindowAttention{good}, 1); err != nil || !slices.Equal(got, positions(0, 10)) {
		t.Errorf("budget == prompt: %v, %v; want every position", got, err)
	}
}

// randomLayers returns layers of random non-negative "attention" with a
// few large values per row, as real attention has.
func randomLayers(rng *rand.Rand, layers, heads, rows, cols int) []WindowAttention {
	out := make([]WindowAttention, layers)
	for l := range out {
		data := make([]float32, heads*rows*cols)
		for i := range data {
			v := rng.Float32()
			data[i] = v * v * v * v
		}
		out[l] = WindowAttention{Heads: heads, Rows: rows, Cols: cols, Data: data}
	}
	return out
}

// sameUpToNearTies reports whether got and want select the same positions,
// allowing differences only among positions whose reference score is within
// a relative 1e-6 of the smallest selected one.
func sameUpToNearTies(got, want []int, scores []float64) bool {
	if len(got) != len(want) {
		return false
	}
	if slices.Equal(got, want) {
		return true
	}
	boundary := math.Inf(1)
	for _, j := range want {
		if j < len(scores) {
			boundary = min(boundary, scores[j])
		}
	}
	for _, j := range symmetricDifference(got, want) {
		if math.Abs(scores[j]-boundary) > 1e-6*math.Abs(boundary) {
			return false
		}
	}
	return true
}

// symmetricDifference returns the members of exactly one of a and b.
func symmetricDifference(a, b []int) []int {
	var d []int
	for _, j := range a {
		if !slices.Contains(b, j) {
			d = append(d, j)
		}
	}
	for _, j := range b {
		if !slices.Contains(a, j) {
			d = append(d, j)
		}
	}
	return d
}

func TestSnapKVMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const heads, kvHeads, window, cols = 4, 2, 8, 300
	layers := randomLayers(rng, 3, heads, window, cols)
	for _, agg := range []Aggregation{AggNormSum, AggMax, AggVotes, AggKVSum, AggQuota, AggSum, AggMaxRaw} {
		for _, pool := range []Pooling{PoolAvg, PoolMax} {
			for _, kernel := range []int{1, 3, 7} {
				for _, budget := range []int{9, 20, 150, 299, 300, 400} {
					cfg := SnapKVConfig{Window: window, Budget: budget, Kernel: kernel, Pool: pool, Agg: agg}
					name := fmt.Sprintf("%v/%v/k%d/b%d", agg, pool, kernel, budget)
					scores, err := SnapKVScores(cfg, layers, kvHeads)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					wantScores := snapKVScoresRef(cfg, layers, kvHeads)
					for j := range scores {
						if !closeTo(scores[j], wantScores[j], 1e-12, 1e-6) {
							t.Fatalf("%s: score[%d] = %v, reference %v", name, j, scores[j], wantScores[j])
						}
					}
					got, err := SnapKV(cfg, layers, kvHeads)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					want := snapKVRef(cfg, layers, kvHeads)
					if len(got) != min(budget, cols) || !sameUpToNearTies(got, want, wantScores) {
						t.Errorf("%s: kept %v, reference %v", name, got, want)
					}
				}
			}
		}
	}
}

func TestAttentionFromQK(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	const heads, kvHeads, rows, cols, dim = 4, 2, 3, 7, 5
	q := randomFloats(rng, heads*rows*dim, -2, 2)
	k := randomFloats(rng, kvHeads*cols*dim, -2, 2)
	att := AttentionFromQK(q, heads, rows, k, kvHeads, cols, dim)
	if err := att.Validate(); err != nil {
		t.Fatal(err)
	}
	ref := attentionRef(q, heads, rows, k, kvHeads, cols, dim)
	for h := range heads {
		for r := range rows {
			pos := cols - rows + r
			row := att.Data[(h*rows+r)*cols:][:cols]
			for c, v := range row {
				want := ref[(h*rows+r)*cols+c]
				if c > pos && v != 0 || !closeTo(float64(v), want, 1e-7, 1e-5) {
					t.Errorf("head %d row %d col %d: %v, want %v", h, r, c, v, want)
				}
			}
		}
	}
}

// TestVotesGiveTheSameSelection: SnapKV on votes (VotesFromQK, or Votes of
// the attention) keeps exactly what it keeps on the full window attention.
func TestVotesGiveTheSameSelection(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const heads, kvHeads, rows, cols, dim = 4, 2, 8, 120, 16
	var full, fromQK, summed []WindowAttention
	for range 3 {
		q := randomNormal(rng, heads*rows*dim)
		k := randomNormal(rng, kvHeads*cols*dim)
		a := AttentionFromQK(q, heads, rows, k, kvHeads, cols, dim)
		full = append(full, a)
		summed = append(summed, a.Votes())
		v := VotesFromQK(q, heads, rows, k, kvHeads, cols, dim)
		for i := range v.Data {
			if d := math.Abs(float64(v.Data[i] - summed[len(summed)-1].Data[i])); d > 1e-5 {
				t.Fatalf("VotesFromQK differs from the summed attention by %g", d)
			}
		}
		fromQK = append(fromQK, v)
	}
	for agg := AggNormSum; agg <= lastAggregation; agg++ {
		cfg := SnapKVConfig{Window: rows, Budget: 40, Kernel: 5, Pool: PoolAvg, Agg: agg}
		want, err := SnapKV(cfg, full, kvHeads)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range [][]WindowAttention{summed, fromQK} {
			got, err := SnapKV(cfg, in, kvHeads)
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("%v: votes kept %v (%v), the attention %v", agg, got, err, want)
			}
		}
	}
}

// TestVotesFromKeys: over more columns than one block of the matrix
// product, VotesFromQK and VotesFromKeys (the same keys scattered over a
// cache's cells in another order, with unused cells between, read a block
// at a time) equal the votes computed naively in float64, and a loader's
// error comes back.
func TestVotesFromKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	const heads, kvHeads, rows, cols, dim = 4, 2, 5, 3*qkBlock + 17, 16
	q := randomNormal(rng, heads*rows*dim)
	k := randomNormal(rng, kvHeads*cols*dim)
	ref := attentionRef(q, heads, rows, k, kvHeads, cols, dim)
	want := make([]float64, heads*cols)
	for hr := range heads * rows {
		for c := range cols {
			want[hr/rows*cols+c] += ref[hr*cols+c]
		}
	}
	rowLen := kvHeads * dim
	cells := rng.Perm(2 * cols)[:cols]
	cacheRows := randomNormal(rng, 2*cols*rowLen) // unused cells hold noise
	for c, cell := range cells {
		for g := range kvHeads {
			copy(cacheRows[cell*rowLen+g*dim:][:dim], k[(g*cols+c)*dim:][:dim])
		}
	}
	loads := 0
	fromCells, err := VotesFromKeys(q, heads, rows, cols, kvHeads, dim, func(dst []float32, c0, count int) error {
		loads++
		if count > qkBlock || len(dst) != count*rowLen {
			t.Fatalf("load of %d columns into %d values", count, len(dst))
		}
		for c := range count {
			copy(dst[c*rowLen:][:rowLen], cacheRows[cells[c0+c]*rowLen:][:rowLen])
		}
		return nil
	})
	if err != nil || loads != 4 {
		t.Fatalf("VotesFromKeys: %v after %d loads, want 4", err, loads)
	}
	broken := errors.New("device gone")
	if _, err := VotesFromKeys(q, heads, rows, cols, kvHeads, dim, func([]float32, int, int) error { return broken }); !errors.Is(err, broken) {
		t.Errorf("a failing load gave %v", err)
	}
	for name, got := range map[string]WindowAttention{
		"VotesFromQK":   VotesFromQK(q, heads, rows, k, kvHeads, cols, dim),
		"VotesFromKeys": fromCells,
	} {
		for i, v := range got.Data {
			if !closeTo(float64(v), want[i], 1e-6, 1e-4) {
				t.Fatalf("%s: head %d column %d = %v, want %v", name, i/cols, i%cols, v, want[i])
			}
		}
	}
}
