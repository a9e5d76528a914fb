package kvtrim

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/kvtrim/kvtrim/policies"
)

// Policy names.
const (
	PolicyNone   = "none"
	PolicySnapKV = "snapkv"
	// PolicyRecent keeps only the last Budget positions: the baseline that
	// shows what scoring is worth.
	PolicyRecent = "recent"
	// PolicyRandom keeps the observation window and Budget - Window
	// positions drawn at random (seeded by Seed) from the rest: the baseline
	// that shows what choosing is worth.
	PolicyRandom = "random"
	// PolicyStreaming is StreamingLLM: keep Sinks positions at the start and
	// the Recent last ones, evicting the oldest others while prefilling and
	// generating and shifting positions down so the cache's positions stay
	// contiguous: generation can run past the context window in fixed
	// memory.
	PolicyStreaming = "streaming"
	// PolicyH2O is H2O: every cached position accumulates the attention it
	// receives over the prompt and every generated token; when the sequence
	// holds more than Heavy + Recent cells, the lowest-scored position
	// outside the Recent newest is evicted. Positions are not shifted.
	PolicyH2O = "h2o"
)

// Compression says how a Session compresses its prompt and its
// generation. The zero value (or Policy "none") keeps the full cache. Its
// JSON names are those of kvtrim serve's "kvtrim" object, and
// CompressionPatch overlays one on another: the command line's flags, the
// server's flags, a request's "kvtrim" object and POST /props all go
// through it and through Check.
type Compression struct {
	// Policy is the prompt's: none, snapkv, recent, random, streaming or
	// h2o.
	Policy string `json:"policy"`
	// Budget is the number of cells to keep, the window included. When 0,
	// Ratio (of the prompt length) sets it.
	Budget int     `json:"budget"`
	Ratio  float64 `json:"ratio"`
	// Window is SnapKV's observation window: the last Window prompt tokens
	// vote for the earlier positions (and are always kept). 0 adapts it
	// to the budget (WindowFor).
	Window int `json:"window"`
	// Lookahead is how many tokens the model greedily generates, on the
	// full cache, after the prompt before SnapKV scores: their attention
	// rows vote together with the window's, and they are then removed
	// (generation regenerates them from the compressed cache). The
	// window's own queries are the prompt's; a model that retrieves only
	// when it writes the answer shows where it will look in these rows
	// (docs/SNAPKV.md). 0 means DefaultLookahead; a negative value none,
	// which is the paper's SnapKV.
	Lookahead int `json:"lookahead"`
	// Kernel is the odd width of the 1-D pooling of the votes.
	Kernel int `json:"kernel"`
	// Pool is "avg" or "max"; Aggregate is how per-head scores of all layers
	// become one per position (see policies.ParseAggregation).
	Pool      string `json:"pool"`
	Aggregate string `json:"aggregate"`
	// Sinks and Recent are StreamingLLM's attention sinks (first positions
	// kept) and recent window. EvictEvery batches evictions: StreamingLLM
	// removes that many positions at once when the cache is full (so keys
	// are re-rotated once per EvictEvery tokens, not every token); H2O
	// removes the positions it drops that many at a time (they stay in the
	// cache, unscored, meanwhile). 0 means 1.
	Sinks      int `json:"sinks"`
	Recent     int `json:"recent"`
	EvictEvery int `json:"evict_every"`
	// DecodePolicy keeps the total bounded while generating after a SnapKV
	// (or recent) prompt: "streaming" re-assigns the kept positions to
	// 0..k-1, then evicts and shifts within Sinks + Recent; "h2o" starts H2O
	// (Heavy + Recent) from the kept positions, scored by the observation
	// window's attention. "" or "none": nothing. Only snapkv, recent and
	// random take one: streaming and h2o evict while generating already.
	DecodePolicy string `json:"decode_policy"`
	// Heavy is H2O's number of heavy hitters (Recent is shared with
	// streaming). With Ratio instead, the budget (Ratio of the prompt) is
	// split evenly between them, as the paper does.
	Heavy int `json:"heavy"`
	// Seed draws PolicyRandom's positions.
	Seed uint64 `json:"seed"`
}

// DefaultCompression is the full cache, with every policy's settings at
// their defaults: what the command line's flags start from.
func DefaultCompression() Compression {
	return Compression{
		Policy: PolicyNone, Lookahead: DefaultLookahead, Kernel: DefaultKernel,
		Pool: DefaultPool, Aggregate: DefaultAggregate, Sinks: DefaultSinks,
	}
}

// DefaultSinks is StreamingLLM's attention sinks, as the paper keeps.
const DefaultSinks = 4

// Defaults of SnapKV's settings.
const (
	// DefaultWindow is the largest window WindowFor adapts to a budget,
	// the paper's 32; MinWindow the smallest.
	DefaultWindow    = 32
	MinWindow        = 4
	DefaultKernel    = 7
	DefaultPool      = "avg"
	DefaultAggregate = "max"
	// DefaultLookahead is kvtrim's extension of SnapKV (the paper's is 0):
	// with it and max, SnapKV keeps the retrieval model's pass keys at a 10%
	// budget (docs/SNAPKV.md).
	DefaultLookahead = 6
)

// Defaults of SnapKV's settings are the paper's code's, except the
// aggregation over heads (which the paper does not need) and the lookahead.

// promptPolicy is the registered prompt-time policy c.Policy names
// (policies.LookupPrompt): snapkv, recent, random, knorm, keydiff, ...
func (c Compression) promptPolicy() (policies.Policy, bool) {
	return policies.LookupPrompt(c.Policy)
}

// PolicyNames are every policy's name: none, the prompt-time policies,
// then streaming and h2o.
func PolicyNames() []string {
	return slices.Concat([]string{PolicyNone}, policies.PromptNames(), []string{PolicyStreaming, PolicyH2O})
}

// KeepsWindow reports whether the prompt policy always keeps the last
// Window prompt positions, so that its budget must exceed the window.
func (c Compression) KeepsWindow() bool {
	p, ok := c.promptPolicy()
	return ok && p.KeepsWindow
}

// Evicts reports whether the compression may evict anything at all.
func (c Compression) Evicts() bool { return c.Policy != "" && c.Policy != PolicyNone }

// PolicyName is the prompt policy's name, "none" for the full cache.
func (c Compression) PolicyName() string {
	if !c.Evicts() {
		return PolicyNone
	}
	return c.Policy
}

// decodePolicy is the decode policy's name, "" for none, and always ""
// for the full cache.
func (c Compression) decodePolicy() string {
	if !c.Evicts() || c.DecodePolicy == PolicyNone {
		return ""
	}
	return c.DecodePolicy
}

// EvictsWhileDecoding reports whether the compression evicts while it
// generates (StreamingLLM or H2O, as the policy or the decode policy): its
// cache is not a prefix of the sequence that later tokens can extend.
func (c Compression) EvictsWhileDecoding() bool { return c.Streams() || c.h2o() }

// h2o reports whether H2O runs, as the policy or the decode policy.
func (c Compression) h2o() bool { return c.Policy == PolicyH2O || c.decodePolicy() == PolicyH2O }

// AnyPromptLength reports whether a prompt of any length fits in a fixed
// cache: StreamingLLM evicts while it prefills.
func (c Compression) AnyPromptLength() bool { return c.Policy == PolicyStreaming }

// Appendable reports whether a cache this compression made can take more
// tokens after it (Session.Append, Truncate): the next turn of a
// conversation whose earlier turns are cached, compressed or not.
func (c Compression) Appendable() bool { return !c.EvictsWhileDecoding() }

// NeedsOwnContext reports whether the compression needs a llama.cpp
// context of its own rather than a sequence of a shared one (Group): H2O,
// as the policy or the decode policy, observes every decoded token
// through its decoding context's eval callback.
func (c Compression) NeedsOwnContext() bool { return c.h2o() }

// withDefaults fills the unset fields.
func (c Compression) withDefaults() Compression {
	if c.Kernel == 0 {
		c.Kernel = DefaultKernel
	}
	if c.Lookahead == 0 {
		c.Lookahead = DefaultLookahead
	}
	if c.Pool == "" {
		c.Pool = DefaultPool
	}
	if c.Aggregate == "" {
		c.Aggregate = DefaultAggregate
	}
	return c
}

// Check validates the settings that do not depend on the prompt.
func (c Compression) Check() error {
	switch c.Policy {
	case "", PolicyNone:
		return nil
	case PolicyStreaming, PolicyH2O:
		if d := c.decodePolicy(); d != "" {
			return fmt.Errorf("decode policy %s after policy %s: %s evicts while generating already; drop the decode policy", d, c.Policy, c.Policy)
		}
	}
	switch c.Policy {
	case PolicyStreaming:
		switch {
		case c.Sinks < 0:
			return fmt.Errorf("sinks %d: give a count >= 0", c.Sinks)
		case c.Recent < 1:
			return fmt.Errorf("streaming needs --recent N >= 1 (the recent window)")
		case c.EvictEvery < 0 || c.EvictEvery > c.Recent:
			return fmt.Errorf("evict-every %d: give between 1 and the recent window %d (0: 1)", c.EvictEvery, c.Recent)
		}
		return nil
	case PolicyH2O:
		switch {
		case c.Ratio < 0 || c.Ratio > 1 || math.IsNaN(c.Ratio):
			return fmt.Errorf("ratio %g: give a share in (0, 1]", c.Ratio)
		case c.Ratio > 0 && (c.Heavy > 0 || c.Recent > 0):
			return fmt.Errorf("give --heavy and --recent, or --ratio, not both")
		case c.Ratio == 0 && (c.Heavy < 0 || c.Recent < 1):
			return fmt.Errorf("h2o needs --heavy H >= 0 and --recent R >= 1, or --ratio")
		case c.EvictEvery < 0:
			return fmt.Errorf("evict-every %d: give a count >= 1 (0: 1)", c.EvictEvery)
		}
		return nil
	default:
		if _, ok := c.promptPolicy(); !ok {
			return fmt.Errorf("unknown policy %q: use %s", c.Policy, strings.Join(PolicyNames(), ", "))
		}
	}
	switch c.DecodePolicy {
	case "", PolicyNone:
	case PolicyStreaming:
		if c.Sinks < 0 || c.Recent < 1 || c.EvictEvery < 0 {
			return fmt.Errorf("--decode-policy streaming needs --sinks S >= 0 and --recent R >= 1")
		}
	case PolicyH2O:
		if c.Heavy < 0 || c.Recent < 1 || c.EvictEvery < 0 {
			return fmt.Errorf("--decode-policy h2o needs --heavy H >= 0 and --recent R >= 1")
		}
	default:
		return fmt.Errorf("decode policy %q: use streaming or h2o (or none)", c.DecodePolicy)
	}
	c = c.withDefaults()
	switch {
	case c.Budget < 0:
		return fmt.Errorf("budget %d: give a number of cells > 0", c.Budget)
	case c.Budget == 0 && (c.Ratio <= 0 || c.Ratio > 1 || math.IsNaN(c.Ratio)):
		return fmt.Errorf("%s needs --budget N (cells) or --ratio R in (0, 1]", c.Policy)
	case c.Budget > 0 && c.Ratio > 0:
		return fmt.Errorf("give --budget or --ratio, not both")
	case c.Window < 0 || c.Window == 1:
		// The last prompt token is decoded again after compaction, right
		// after the one before it, so the window keeps at least those two.
		return fmt.Errorf("window %d: give at least 2 (0: adapt to the budget)", c.Window)
	case c.Budget > 0 && c.Budget <= c.WindowFor(c.Budget):
		return fmt.Errorf("budget %d must be larger than the window %d: the window is always kept, and the budget counts it", c.Budget, c.WindowFor(c.Budget))
	}
	if _, err := c.snapKV(c.Budget); err != nil {
		return err
	}
	return nil
}

// snapKV builds the policy configuration for a budget.
func (c Compression) snapKV(budget int) (policies.SnapKVConfig, error) {
	c = c.withDefaults()
	pool, err := policies.ParsePooling(c.Pool)
	if err != nil {
		return policies.SnapKVConfig{}, err
	}
	agg, err := policies.ParseAggregation(c.Aggregate)
	if err != nil {
		return policies.SnapKVConfig{}, err
	}
	cfg := policies.SnapKVConfig{Window: c.WindowFor(budget), Budget: budget, Kernel: c.Kernel, Pool: pool, Agg: agg}
	if c.Kernel < 1 || c.Kernel%2 == 0 {
		return cfg, fmt.Errorf("kernel %d: give an odd width >= 1", c.Kernel)
	}
	return cfg, nil
}

// lookaheadTokens is the number of lookahead tokens to generate.
func (c Compression) lookaheadTokens() int {
	if p, ok := c.promptPolicy(); !ok || p.Observes != policies.ObservesWindow {
		return 0
	}
	return max(0, c.withDefaults().Lookahead)
}

// h2oSplit is H2O's heavy and recent counts for a prompt of n tokens. Only
// the h2o policy splits a Ratio; as a decode policy H2O's counts are always
// Heavy and Recent (Ratio is then the prompt policy's).
func (c Compression) h2oSplit(n int) (heavy, recent int) {
	if c.Policy != PolicyH2O || c.Ratio == 0 {
		return c.Heavy, c.Recent
	}
	budget := max(2, int(math.Ceil(c.Ratio*float64(n))))
	return budget / 2, budget - budget/2
}

// PrefillsAside reports whether Prefill of a prompt of n tokens builds it
// first in a temporary context as large as the prompt and moves only the
// kept cells into the session's: SnapKV and the recent and random
// baselines, when the budget is smaller than the prompt (and, for a Ratio,
// larger than the window SnapKV and random always keep: a shorter prompt
// is kept whole). A server bounds its memory by running one such prefill
// at a time.
func (c Compression) PrefillsAside(n int) bool {
	if _, ok := c.promptPolicy(); ok {
		return !c.tooShort(n) && c.BudgetFor(n) < n
	}
	return false
}

// tooShort reports whether a prompt of n tokens is too short for SnapKV or
// the random baseline to compress at Ratio: its budget would not exceed the
// window, which they always keep. (An explicit Budget that small is
// refused by Check; the recent baseline keeps no window.)
func (c Compression) tooShort(n int) bool {
	return c.KeepsWindow() && c.Budget == 0 && c.BudgetFor(n) <= c.WindowFor(c.BudgetFor(n))
}

// WindowFor is the observation window for a budget of cells: Window when
// set, else an eighth of the budget between MinWindow and DefaultWindow.
// A window takes its cells from the budget, and at small budgets the
// paper's 32 leaves few for what it votes for: on the recall model
// (RECALL.md's public set, SnapKV at 10%) a window of 32 answered 24 of
// 30 prompts, 16 answered 26, 8 answered 29 and 4 all 30 (docs/SNAPKV.md).
func (c Compression) WindowFor(budget int) int {
	if c.Window > 0 {
		return c.Window
	}
	return min(DefaultWindow, max(MinWindow, budget/8))
}

// BudgetFor is the number of cells to keep of a prompt of n tokens: Budget,
// or Ratio of n rounded up.
func (c Compression) BudgetFor(n int) int {
	if c.Budget > 0 {
		return c.Budget
	}
	return int(math.Ceil(c.Ratio * float64(n)))
}
