package hooks_test

import (
	"slices"
	"testing"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/hooks"
	"github.com/kvtrim/kvtrim/policies"
)

// TestStateKVLayouts: the keys and values read from a sequence's saved
// state are the same whether llama.cpp stores the values by row (flash
// attention on) or transposed (off), with an F32 and an F16 cache, and
// each value row is the one the position's decode wrote: a prompt decoded
// again from its first tokens gives equal rows there.
func TestStateKVLayouts(t *testing.T) {
	const prompt = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
	for _, cache := range []bindings.GGMLType{bindings.CacheF32, bindings.CacheF16} {
		var got [2]*hooks.StateKV
		for i, fa := range []bindings.FlashAttn{bindings.FlashAttnEnabled, bindings.FlashAttnDisabled} {
			o := observe(t, "stories260K.gguf", fa, prompt, 4, 512, cache)
			state, err := o.ctx.SeqState(0, 0)
			if err != nil {
				t.Fatal(err)
			}
			kv, err := hooks.ReadStateKV(state, 0, o.model.NHeadKV(), o.model.NEmbd()/o.model.NHead())
			if err != nil {
				t.Fatalf("cache %v, fa %v: %v", cache, fa, err)
			}
			if kv.Layers != o.model.NLayer() {
				t.Fatalf("%d layers, the model has %d", kv.Layers, o.model.NLayer())
			}
			got[i] = kv
		}
		for il := range got[0].Layers {
			for _, part := range []string{"keys", "values"} {
				var rows [2][]float32
				for i, kv := range got {
					read := kv.Keys
					if part == "values" {
						read = kv.Values
					}
					k, err := read(il)
					if err != nil {
						t.Fatal(err)
					}
					rows[i] = k.Rows
				}
				if len(rows[0]) == 0 || len(rows[0]) != len(rows[1]) {
					t.Fatalf("layer %d %s: %d and %d values", il, part, len(rows[0]), len(rows[1]))
				}
				// The two contexts' hidden states differ in the last bits
				// (flash attention sums in another order).
				worst := 0.0
				for j := range rows[0] {
					worst = max(worst, float64(abs(rows[0][j]-rows[1][j])))
				}
				if worst > 2e-2 {
					t.Errorf("cache %v, layer %d %s: by-row and transposed states differ by %g", cache, il, part, worst)
				}
			}
		}
	}
	if _, err := hooks.ReadStateKV([]byte{1, 2, 3}, 0, 1, 1); err == nil {
		t.Error("a truncated state was read")
	}
}

func abs(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}

// TestRopeMatchesLlama: a layer-0 key depends only on its token and its
// position, so the same token's keys at two positions, turned back by
// their positions with the model's Rope, are equal: kvtrim's RoPE (pair
// layout, base, scale) is llama.cpp's. Turned back by the wrong
// positions they are not, so the comparison can fail.
func TestRopeMatchesLlama(t *testing.T) {
	o := newObserved(t, "stories260K.gguf", bindings.FlashAttnEnabled, 512, bindings.CacheF32, false)
	toks, err := o.model.Vocab().Tokenize("the cat and the dog and the bird and the fish", true, false)
	if err != nil {
		t.Fatal(err)
	}
	o.decode(t, toks, 0)
	state, err := o.ctx.SeqState(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := hooks.ReadStateKV(state, 0, o.model.NHeadKV(), o.model.NEmbd()/o.model.NHead())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(0)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := o.model.Rope()
	if !ok || r.Dims == 0 {
		t.Fatalf("rope %+v, %v", r, ok)
	}
	rope := policies.Rope(r)
	// Positions of the token that repeats most.
	at := map[bindings.Token][]int{}
	for p, tok := range toks {
		at[tok] = append(at[tok], p)
	}
	var same []int
	for _, ps := range at {
		if len(ps) > len(same) {
			same = ps
		}
	}
	if len(same) < 3 {
		t.Fatalf("no token repeats: %v", toks)
	}
	unrotated := func(p, shift int) []float32 {
		var all []float32
		for h := range kv.KVHeads {
			x := slices.Clone(keys.Row(p, h))
			rope.Rotate(x, -float64(p+shift))
			all = append(all, x...)
		}
		return all
	}
	worst, wrong := 0.0, 0.0
	first := unrotated(same[0], 0)
	for _, p := range same[1:] {
		worst = max(worst, diff(first, unrotated(p, 0)))
		wrong = max(wrong, diff(first, unrotated(p, 1)))
	}
	if worst > 1e-4 || wrong < 1e-2 {
		t.Errorf("the token's keys at %v turned back differ by %g (by %g turned back one position off)", same, worst, wrong)
	}
}

func diff(a, b []float32) float64 {
	worst := 0.0
	for i := range a {
		worst = max(worst, float64(abs(a[i]-b[i])))
	}
	return worst
}
