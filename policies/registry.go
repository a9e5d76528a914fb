package policies

import (
	"fmt"
	"math/rand/v2"
	"slices"
)

// Observes is what a prompt-time policy reads of a sequence to choose the
// positions it keeps: what the caller must observe while the prompt is
// decoded, and nothing more.
type Observes int

const (
	// ObservesNothing: the positions alone decide (recent, random).
	ObservesNothing Observes = iota
	// ObservesWindow: the observation window's attention over the prompt
	// (Prompt.Attention), as SnapKV votes with it.
	ObservesWindow
	// ObservesKeys: the keys the cache holds for every position
	// (Prompt.Keys), which a sequence's saved state carries, so no eval
	// callback is needed.
	ObservesKeys
	// ObservesQueries: the last QueryRows queries of the prompt
	// (Prompt.Queries, after RoPE) as well as the keys and values.
	ObservesQueries
)

// Prompt is what a prompt-time policy is given to choose from: a prompt of
// Len positions, of which it keeps Budget (Budget < Len), the last Window
// of them always.
type Prompt struct {
	Len, Budget, Window int
	// Anchors, when set, are per layer the sum of the unit keys
	// ([kvHead][dim]) of every position the prompt has had, the evicted
	// ones of a chunked prefill too: KeyDiff's mean key over the whole
	// prompt, where Keys holds only the kept positions'. nil: the sum over
	// Keys.
	Anchors [][]float32
	// End is the prompt's length when the Len columns are not positions
	// 0..Len-1 but the ascending positions a chunked prefill kept (the
	// last Window of them the prompt's last); 0 means Len. Policies that
	// place queries by position (Expected Attention) use it.
	End int
	// KVHeads is the model's KV heads; Layers its layers.
	KVHeads, Layers int
	// Attention is, per layer, the window's attention (or votes) over the
	// prompt's positions (ObservesWindow).
	Attention []WindowAttention
	// Keys returns one layer's keys (ObservesKeys), one layer at a time so
	// that only one is in memory; Values its values, laid out as keys.
	Keys, Values func(layer int) (Keys, error)
	// Heads is the model's query heads. Queries returns one layer's last
	// query rows of the prompt (ObservesQueries), oldest first, at
	// positions Len-len(rows) .. Len-1, each Heads x HeadDim values after
	// RoPE, which Rope describes.
	Heads   int
	Queries func(layer int) ([][]float32, error)
	Rope    Rope
	// Kernel, Pool and Agg are how per-head scores become one selection
	// (SnapKVConfig); Seed draws random choices.
	Kernel int
	Pool   Pooling
	Agg    Aggregation
	Seed   uint64
}

// Keys is one layer's keys for positions 0..n-1, as the cache holds them
// (after RoPE): position p's key for KV head h is
// Rows[(p*KVHeads+h)*HeadDim:][:HeadDim].
type Keys struct {
	KVHeads, HeadDim int
	Rows             []float32
}

// Row is position p's key for KV head h.
func (k Keys) Row(p, h int) []float32 {
	return k.Rows[(p*k.KVHeads+h)*k.HeadDim:][:k.HeadDim]
}

// PromptOptions are a prompt-time policy's settings besides its budget, as
// kvtrim's Compression carries them (their JSON names in Policy.Options).
type PromptOptions struct {
	Window, Kernel, Lookahead int
	Pool, Aggregate           string
	Seed                      uint64
}

// checkAggregation is the Check of a policy whose scores per head are
// combined as SnapKV's votes (selectByHeadScores).
func checkAggregation(o PromptOptions) error {
	_, err := ParseAggregation(o.Aggregate)
	return err
}

// checkSnapKV checks SnapKV's pooling and aggregation.
func checkSnapKV(o PromptOptions) error {
	if o.Kernel < 1 || o.Kernel%2 == 0 {
		return fmt.Errorf("kernel %d: give an odd width >= 1", o.Kernel)
	}
	if _, err := ParsePooling(o.Pool); err != nil {
		return err
	}
	return checkAggregation(o)
}

// Selector chooses the positions of a prompt that keep their cells:
// Budget of them, ascending, the last Window included.
type Selector func(p Prompt) ([]int, error)

// Policy is a prompt-time policy: its name (the CLI's --policy, the
// server's "kvtrim" object), a line saying what it keeps, what it needs
// observed, and its selector. Adding one is a file with its Selector and
// a line in promptPolicies.
type Policy struct {
	Name, Summary string
	Observes      Observes
	// KeepsWindow says the policy always keeps the last Window positions,
	// so its budget must exceed the window.
	KeepsWindow bool
	// QueryRows is how many of the prompt's last queries a policy that
	// ObservesQueries reads.
	QueryRows int
	// Options are the settings it reads (PromptOptions, by their JSON
	// names), and Check validates them (nil: nothing to check).
	Options []string
	Check   func(o PromptOptions) error
	Select  Selector
}

// promptPolicies are the prompt-time policies, in the order --help lists
// them.
var promptPolicies = []Policy{
	{Name: "snapkv", Summary: "the observation window's attention votes, pooled (SnapKV)", Observes: ObservesWindow, KeepsWindow: true,
		Options: []string{"window", "lookahead", "kernel", "pool", "aggregate"}, Check: checkSnapKV, Select: selectSnapKV},
	{Name: "recent", Summary: "the last Budget positions (baseline)", Select: selectRecent},
	{Name: "random", Summary: "the window and Budget-Window positions drawn at random (baseline)", KeepsWindow: true,
		Options: []string{"window", "seed"}, Select: selectRandom},
	knorm,
	keyDiff,
	expectedAttention,
}

// LookupPrompt returns the prompt-time policy called name.
func LookupPrompt(name string) (Policy, bool) {
	i := slices.IndexFunc(promptPolicies, func(p Policy) bool { return p.Name == name })
	if i < 0 {
		return Policy{}, false
	}
	return promptPolicies[i], true
}

// PromptNames are the prompt-time policies' names.
func PromptNames() []string {
	names := make([]string, len(promptPolicies))
	for i, p := range promptPolicies {
		names[i] = p.Name
	}
	return names
}

// check refuses a Prompt a selector cannot choose from.
func (p Prompt) check(keepsWindow bool) error {
	switch {
	case p.Budget < 1 || p.Budget >= p.Len:
		return fmt.Errorf("budget %d of a %d-position prompt: give between 1 and %d", p.Budget, p.Len, p.Len-1)
	case keepsWindow && (p.Window < 1 || p.Window >= p.Budget):
		return fmt.Errorf("window %d: give between 1 and the budget %d", p.Window, p.Budget)
	}
	return nil
}

func selectSnapKV(p Prompt) ([]int, error) {
	cfg := SnapKVConfig{Window: p.Window, Budget: p.Budget, Kernel: p.Kernel, Pool: p.Pool, Agg: p.Agg}
	return SnapKV(cfg, p.Attention, p.KVHeads)
}

func selectRecent(p Prompt) ([]int, error) {
	if err := p.check(false); err != nil {
		return nil, err
	}
	return positions(p.Len-p.Budget, p.Len), nil
}

func selectRandom(p Prompt) ([]int, error) {
	if err := p.check(true); err != nil {
		return nil, err
	}
	r := rand.New(rand.NewPCG(p.Seed, uint64(p.Len)))
	kept := r.Perm(p.Len - p.Window)[:p.Budget-p.Window]
	slices.Sort(kept)
	return withWindow(kept, p.Len, p.Window), nil
}

// selectByHeadScores keeps the window and the Budget-Window positions
// before it that score best over all layers' KV heads, combining the
// heads' scores as SnapKV combines its votes (p.Agg; not pooled): a cell
// serves every head. score fills one layer's scores,
// dst[h*n+i] for KV head h and position i < n = Len-Window; they must be
// >= 0, higher kept first.
func selectByHeadScores(p Prompt, score func(k Keys, n int, dst []float32)) ([]int, error) {
	return selectByLayerScores(p, func(_ int, k Keys, n int, dst []float32) error {
		score(k, n, dst)
		return nil
	})
}

// selectByLayerScores is selectByHeadScores for a score that also reads
// other things of layer il than its keys (Prompt.Values, Prompt.Queries).
func selectByLayerScores(p Prompt, score func(il int, k Keys, n int, dst []float32) error) ([]int, error) {
	if err := p.check(true); err != nil {
		return nil, err
	}
	n := p.Len - p.Window
	layers := make([]WindowAttention, p.Layers)
	for il := range layers {
		k, err := p.Keys(il)
		if err != nil {
			return nil, err
		}
		if k.KVHeads != p.KVHeads || len(k.Rows) < p.Len*k.KVHeads*k.HeadDim {
			return nil, fmt.Errorf("layer %d: keys of %d heads for %d values, want %d heads of %d positions", il, k.KVHeads, len(k.Rows), p.KVHeads, p.Len)
		}
		// One row per head over the whole prompt, as SnapKV's votes; the
		// window's columns score 0 (it is kept anyway).
		att := WindowAttention{Heads: k.KVHeads, Rows: 1, Cols: p.Len, Data: make([]float32, k.KVHeads*p.Len)}
		heads := make([]float32, k.KVHeads*n)
		if err := score(il, k, n, heads); err != nil {
			return nil, fmt.Errorf("layer %d: %w", il, err)
		}
		for h := range k.KVHeads {
			copy(att.Data[h*p.Len:][:n], heads[h*n:][:n])
		}
		layers[il] = att
	}
	cfg := SnapKVConfig{Window: p.Window, Budget: p.Budget, Kernel: 1, Pool: PoolAvg, Agg: p.Agg}
	return SnapKV(cfg, layers, p.KVHeads)
}
