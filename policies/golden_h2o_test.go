package policies

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
)

// h2oMaskCase is one case of kind h2o_mask.
type h2oMaskCase struct {
	NHeads       int           `json:"n_heads"`
	SeqLen       int           `json:"seq_len"`
	HeavyBudget  int           `json:"heavy_budget"`
	RecentBudget int           `json:"recent_budget"`
	Attn         [][][]float32 `json:"attn"`
	HeavyMask    [][][]int     `json:"heavy_mask"`
	CombinedMask [][][]int     `json:"combined_mask"`
	Global       *struct {
		ColumnSums   [][]float32 `json:"column_sums"`
		Heavy        [][]int     `json:"heavy"`
		CombinedMask [][][]int   `json:"combined_mask"`
	} `json:"global"`
}

// runH2OMaskCase checks heavy_mask, combined_mask and global.* per head.
func runH2OMaskCase(t *testing.T, raw json.RawMessage) {
	var c h2oMaskCase
	decodeCase(t, raw, &c)
	n, hb, rb := c.SeqLen, c.HeavyBudget, c.RecentBudget
	att := WindowAttention{Heads: c.NHeads, Rows: n, Cols: n, Data: flatten3(c.Attn)}
	if err := att.Validate(); err != nil {
		t.Fatal(err)
	}
	if (c.HeavyMask == nil) != (hb == 0) {
		t.Fatalf("heavy_mask is null: %v, heavy budget %d", c.HeavyMask == nil, hb)
	}
	if len(c.CombinedMask) != c.NHeads || (c.HeavyMask != nil && len(c.HeavyMask) != c.NHeads) {
		t.Fatalf("masks do not have %d heads", c.NHeads)
	}
	if (c.Global == nil) != (hb > n) {
		t.Fatalf("global is null: %v, heavy budget %d, length %d", c.Global == nil, hb, n)
	}
	for h := range c.NHeads {
		heavy := HeavyHitterMask(att.Head(h), n, hb)
		if c.HeavyMask == nil {
			if heavy != nil {
				t.Errorf("head %d: heavy mask %v, want none", h, heavy)
			}
		} else {
			checkRows(t, fmt.Sprintf("heavy_mask[%d]", h), heavy, c.HeavyMask[h])
		}
		checkRows(t, fmt.Sprintf("combined_mask[%d]", h), CombineRecent(heavy, n, rb), c.CombinedMask[h])

		sums := att.ColumnSums(h, 1)
		set, mask, err := GlobalHeavyMask(sums, hb, rb)
		if c.Global == nil {
			if err == nil {
				t.Errorf("head %d: GlobalHeavyMask with heavy %d > %d: no error", h, hb, n)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		checkFloats(t, fmt.Sprintf("global.column_sums[%d]", h), sums, c.Global.ColumnSums[h])
		checkSelection(t, fmt.Sprintf("global.heavy[%d]", h), set, c.Global.Heavy[h], nil)
		checkRows(t, fmt.Sprintf("global.combined_mask[%d]", h), mask, c.Global.CombinedMask[h])
	}
}

// h2oDecodeCase is one case of kind h2o_decode.
type h2oDecodeCase struct {
	NHeads     int           `json:"n_heads"`
	PromptLen  int           `json:"prompt_len"`
	StepsCount int           `json:"steps_count"`
	HHSize     int           `json:"hh_size"`
	RecentSize int           `json:"recent_size"`
	CacheSize  int           `json:"cache_size"`
	PromptAttn [][][]float32 `json:"prompt_attn"`
	Reference  struct {
		PrefillKept   [][]int     `json:"prefill_kept"`
		PrefillScores [][]float32 `json:"prefill_scores"`
		Steps         []struct {
			Pos    int         `json:"pos"`
			Attn   [][]float32 `json:"attn"`
			Kept   [][]int     `json:"kept"`
			Scores [][]float32 `json:"scores"`
		} `json:"steps"`
	} `json:"reference"`
	ExtHeadSum struct {
		PrefillKept   []int     `json:"prefill_kept"`
		PrefillScores []float32 `json:"prefill_scores"`
		Steps         []struct {
			Pos    int         `json:"pos"`
			Attn   [][]float32 `json:"attn"`
			Kept   []int       `json:"kept"`
			Scores []float32   `json:"scores"`
		} `json:"steps"`
	} `json:"ext_head_sum"`
}

// h2oRun is one run of an h2o_decode case in a common form: one H2O per
// entry of prefill; each step gives every H2O its row.
type h2oRun struct {
	name          string
	prefill       [][]float32
	prefillKept   [][]int
	prefillScores [][]float32
	steps         []h2oStep
}

// h2oStep is one decode step of an h2oRun.
type h2oStep struct {
	pos    int
	rows   [][]float32
	kept   [][]int
	scores [][]float32
}

// runH2ODecodeCase checks the reference (one H2O per head) and
// ext_head_sum (one H2O fed head-summed scores) runs.
func runH2ODecodeCase(t *testing.T, raw json.RawMessage) {
	var c h2oDecodeCase
	decodeCase(t, raw, &c)
	att := WindowAttention{Heads: c.NHeads, Rows: c.PromptLen, Cols: c.PromptLen, Data: flatten3(c.PromptAttn)}
	if err := att.Validate(); err != nil {
		t.Fatal(err)
	}
	ref := h2oRun{name: "reference", prefillKept: c.Reference.PrefillKept, prefillScores: c.Reference.PrefillScores}
	for h := range c.NHeads {
		ref.prefill = append(ref.prefill, att.ColumnSums(h, 1))
	}
	for _, s := range c.Reference.Steps {
		ref.steps = append(ref.steps, h2oStep{pos: s.Pos, rows: s.Attn, kept: s.Kept, scores: s.Scores})
	}
	ext := h2oRun{
		name:          "ext_head_sum",
		prefill:       [][]float32{att.ColumnSums(0, c.NHeads)},
		prefillKept:   [][]int{c.ExtHeadSum.PrefillKept},
		prefillScores: [][]float32{c.ExtHeadSum.PrefillScores},
	}
	for _, s := range c.ExtHeadSum.Steps {
		sum := make([]float32, len(s.Attn[0]))
		for _, row := range s.Attn {
			addFloat32(sum, row)
		}
		ext.steps = append(ext.steps, h2oStep{pos: s.Pos, rows: [][]float32{sum}, kept: [][]int{s.Kept}, scores: [][]float32{s.Scores}})
	}
	for _, run := range []h2oRun{ref, ext} {
		if len(run.steps) != c.StepsCount {
			t.Errorf("%s: %d steps, steps_count %d", run.name, len(run.steps), c.StepsCount)
		}
		checkH2ORun(t, c, run)
	}
}

// checkH2ORun replays one run and stops it at its first wrong state.
func checkH2ORun(t *testing.T, c h2oDecodeCase, run h2oRun) {
	t.Helper()
	heads := len(run.prefill)
	if len(run.prefillKept) != heads || len(run.prefillScores) != heads {
		t.Fatalf("%s: golden prefill state does not have %d heads", run.name, heads)
	}
	policies := make([]*H2O, heads)
	ok := true
	for h := range policies {
		p, err := NewH2O(c.HHSize, c.RecentSize)
		if err != nil {
			t.Fatal(err)
		}
		if p.CacheSize() != c.CacheSize {
			t.Errorf("CacheSize %d, golden %d", p.CacheSize(), c.CacheSize)
		}
		before := positions(0, c.PromptLen)
		evicted := p.Prefill(run.prefill[h])
		ok = checkH2OState(t, fmt.Sprintf("%s prefill head %d", run.name, h), p, before, evicted, run.prefillKept[h], run.prefillScores[h]) && ok
		policies[h] = p
	}
	for i, step := range run.steps {
		if !ok {
			return
		}
		where := fmt.Sprintf("%s step %d", run.name, i)
		if step.pos != c.PromptLen+i || len(step.rows) < heads || len(step.kept) != heads || len(step.scores) != heads {
			t.Fatalf("%s: golden step malformed (pos %d)", where, step.pos)
		}
		for h, p := range policies {
			before := append(p.Kept(), step.pos)
			evicted, err := p.Step(step.pos, step.rows[h])
			if err != nil {
				t.Fatalf("%s head %d: %v", where, h, err)
			}
			ok = checkH2OState(t, fmt.Sprintf("%s head %d", where, h), p, before, evicted, step.kept[h], step.scores[h]) && ok
		}
	}
}

// checkH2OState compares an H2O's state with the golden one and checks that
// the evicted positions are exactly those that left; it reports success.
func checkH2OState(t *testing.T, where string, p *H2O, before, evicted, wantKept []int, wantScores []float32) bool {
	t.Helper()
	ok := checkSelection(t, where+" kept", p.Kept(), wantKept, nil)
	ok = checkFloats(t, where+" scores", p.Scores(), wantScores) && ok
	gone := slices.DeleteFunc(slices.Clone(before), func(j int) bool { return slices.Contains(p.Kept(), j) })
	if !slices.Equal(evicted, gone) {
		t.Errorf("%s: evicted %v, but %v left", where, evicted, gone)
		ok = false
	}
	return ok
}
