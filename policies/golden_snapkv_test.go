package policies

import (
	"encoding/json"
	"testing"
)

// snapSteps are SnapKV's per-row outputs with a leading head (or KV group)
// dimension: the reference fields and ext_kv_head.
type snapSteps struct {
	Vote     [][]float32 `json:"vote"`
	Pooled   [][]float32 `json:"pooled"`
	Selected [][]int     `json:"selected"`
	Ties     []tieRule   `json:"ties"`
	Kept     [][]int     `json:"kept"`
}

// snapLayerSteps are ext_all_heads' outputs, without the head dimension.
type snapLayerSteps struct {
	Vote     []float32 `json:"vote"`
	Pooled   []float32 `json:"pooled"`
	Selected []int     `json:"selected"`
	Ties     *tieRule  `json:"ties"`
	Kept     []int     `json:"kept"`
}

// asSteps gives s a head dimension of one.
func (s snapLayerSteps) asSteps() snapSteps {
	out := snapSteps{Kept: [][]int{s.Kept}}
	if s.Vote != nil {
		out.Vote, out.Pooled, out.Selected = [][]float32{s.Vote}, [][]float32{s.Pooled}, [][]int{s.Selected}
	}
	if s.Ties != nil {
		out.Ties = []tieRule{*s.Ties}
	}
	return out
}

// snapCase is one case of kind snapkv.
type snapCase struct {
	Input       string        `json:"input"`
	NHeads      int           `json:"n_heads"`
	NKVHeads    int           `json:"n_kv_heads"`
	HeadDim     int           `json:"head_dim"`
	QLen        int           `json:"q_len"`
	Window      int           `json:"window_size"`
	Budget      int           `json:"max_capacity_prompt"`
	Kernel      int           `json:"kernel_size"`
	Pooling     string        `json:"pooling"`
	ExpectError bool          `json:"expect_error"`
	QueryWindow [][][]float32 `json:"query_window"`
	KeyStates   [][][]float32 `json:"key_states"`
	AttnWindow  [][][]float32 `json:"attn_window"`
	Compressed  *bool         `json:"compressed"`
	snapSteps
	ExtKVHead   snapSteps      `json:"ext_kv_head"`
	ExtAllHeads snapLayerSteps `json:"ext_all_heads"`
}

// runSnapKVCase checks one snapkv case: the window attention (qk input),
// the reference per-head steps, ext_kv_head, ext_all_heads, and SnapKV
// itself, which with AggKVSum and one KV head must select as ext_all_heads.
func runSnapKVCase(t *testing.T, raw json.RawMessage) {
	var c snapCase
	decodeCase(t, raw, &c)
	pool, err := ParsePooling(c.Pooling)
	if err != nil {
		t.Fatal(err)
	}
	cfg := SnapKVConfig{Window: c.Window, Budget: c.Budget, Kernel: c.Kernel, Pool: pool, Agg: AggKVSum}
	var att WindowAttention
	switch c.Input {
	case "qk":
		att = AttentionFromQK(flatten3(c.QueryWindow), c.NHeads, c.Window, flatten3(c.KeyStates), c.NKVHeads, c.QLen, c.HeadDim)
	case "attn":
		att = WindowAttention{Heads: c.NHeads, Rows: c.Window, Cols: c.QLen, Data: flatten3(c.AttnWindow)}
	default:
		t.Fatalf("unknown input %q", c.Input)
	}
	layers := []WindowAttention{att}
	if c.ExpectError {
		if err := cfg.Validate(c.QLen); err == nil {
			t.Errorf("Validate(%d) of %+v: no error", c.QLen, cfg)
		}
		if _, err := SnapKV(cfg, layers, 1); err == nil {
			t.Errorf("SnapKV: no error")
		}
		if _, err := cfg.SelectLayer(att, 1); err == nil {
			t.Errorf("SelectLayer: no error")
		}
		return
	}
	if err := cfg.Validate(c.QLen); err != nil {
		t.Fatal(err)
	}
	if c.Compressed == nil {
		t.Fatal("no compressed field")
	}
	compressed := *c.Compressed
	if compressed != (c.QLen >= c.Budget) {
		t.Errorf("compressed = %v with prompt %d and budget %d", compressed, c.QLen, c.Budget)
	}
	if c.Input == "qk" && compressed {
		checkFloats(t, "attn_window", att.Data, flatten3(c.AttnWindow))
	}
	if c.NKVHeads < 1 || c.NHeads%c.NKVHeads != 0 {
		t.Fatalf("%d heads, %d KV heads", c.NHeads, c.NKVHeads)
	}
	for _, run := range []struct {
		name      string
		groupSize int
		want      snapSteps
	}{
		{"reference", 1, c.snapSteps},
		{"ext_kv_head", c.NHeads / c.NKVHeads, c.ExtKVHead},
		{"ext_all_heads", c.NHeads, c.ExtAllHeads.asSteps()},
	} {
		sels, err := cfg.SelectLayer(att, run.groupSize)
		if err != nil {
			t.Fatalf("%s: %v", run.name, err)
		}
		checkSelections(t, run.name, sels, run.want, compressed)
	}
	kept, err := SnapKV(cfg, layers, 1)
	if err != nil {
		t.Fatal(err)
	}
	checkSelection(t, "SnapKV(kvsum, 1 KV head).kept vs ext_all_heads.kept", kept, c.ExtAllHeads.Kept, c.ExtAllHeads.Ties)
}

// checkSelections compares SelectLayer's results with the golden steps; a
// case that is not compressed has only kept.
func checkSelections(t *testing.T, name string, got []Selection, want snapSteps, compressed bool) {
	t.Helper()
	if len(want.Kept) != len(got) {
		t.Fatalf("%s: %d selections, golden has %d", name, len(got), len(want.Kept))
	}
	if compressed && (len(want.Vote) != len(got) || len(want.Pooled) != len(got) ||
		len(want.Selected) != len(got) || len(want.Ties) != len(got)) {
		t.Fatalf("%s: golden vote/pooled/selected/ties missing or not %d long", name, len(got))
	}
	for g, s := range got {
		var ties *tieRule
		if compressed {
			ties = &want.Ties[g]
			checkFloats(t, name+".vote", s.Vote, want.Vote[g])
			checkFloats(t, name+".pooled", s.Pooled, want.Pooled[g])
			checkSelection(t, name+".selected", s.Selected, want.Selected[g], ties)
		}
		checkSelection(t, name+".kept", s.Kept, want.Kept[g], ties)
	}
}
