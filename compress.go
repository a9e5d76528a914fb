package kvtrim

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/kvtrim/kvtrim/policies"
)

// PolicyNone keeps the full cache. Every other policy's name is its
// registry entry's in package policies: prompt-time ones
// (policies.LookupPrompt) compress the prompt once; decode-time ones
// (policies.LookupDecode) evict while decoding, as the policy from the
// prompt on or as the decode policy after a prompt-time one.
const PolicyNone = "none"

// PolicySnapKV is SnapKV's name: the policy kvtrim serve and bench
// compress with when asked for compression without naming one.
const PolicySnapKV = "snapkv"

// Compression says how a Session compresses its prompt and its
// generation. The zero value (or Policy "none") keeps the full cache. Its
// JSON names are those of kvtrim serve's "kvtrim" object, and
// CompressionPatch overlays one on another: the command line's flags, the
// server's flags, a request's "kvtrim" object and POST /props all go
// through it and through Check.
type Compression struct {
	// Policy is none, a prompt-time policy (snapkv, recent, random,
	// knorm, keydiff, ...) or a decode-time one run from the prompt on
	// (streaming, h2o, tova, ...): PolicyNames.
	Policy string `json:"policy"`
	// Budget is the number of cells to keep, the window included. When 0,
	// Ratio (of the prompt length) sets it. A decode-time policy after a
	// prompt-time one keeps the budget the prompt's (TOVA) or its own
	// counts (Heavy, Recent, Sinks).
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
	// cache, unscored, meanwhile), and so does TOVA. 0 means the policy's
	// default: 1, or for StreamingLLM policies.DefaultEvictEvery.
	Sinks      int `json:"sinks"`
	Recent     int `json:"recent"`
	EvictEvery int `json:"evict_every"`
	// DecodePolicy keeps the total bounded while generating after a
	// prompt-time policy: a decode-time policy's name (policies.DecodeNames).
	// "streaming" re-assigns the kept positions to 0..k-1, then evicts and
	// shifts within Sinks + Recent; "h2o" starts H2O (Heavy + Recent) from
	// the kept positions, scored by the observation window's attention;
	// "tova" keeps the budget's cells by the current query's attention.
	// "" or "none": nothing. A decode-time policy as the Policy takes none:
	// it evicts while generating already.
	DecodePolicy string `json:"decode_policy"`
	// Heavy is H2O's number of heavy hitters (Recent is shared with
	// streaming). With Ratio instead, the budget (Ratio of the prompt) is
	// split evenly between them, as the paper does.
	Heavy int `json:"heavy"`
	// Seed draws the random baseline's positions.
	Seed uint64 `json:"seed"`
	// Chunk prefills a prompt a prompt-time policy compresses Chunk tokens
	// at a time, into a context of about Budget + Chunk cells, evicting
	// back to the budget after each chunk, so that the prompt's cells are
	// never all held at once: peak memory is the budget's and a chunk's,
	// not the prompt's. The last chunk ends with the prompt's own window
	// (and lookahead), and the policy makes the final choice as it would
	// over the whole prompt. 0 chunks only a prompt that does not fit in
	// the session's context (-c), in chunks of DefaultChunk or what -c
	// leaves beside the budget and the lookahead; a negative value never
	// chunks.
	Chunk int `json:"chunk"`
	// ChunkPolicy chooses what each chunk's eviction keeps, before the
	// prompt's end is known: a policy that reads only keys ("keydiff",
	// "knorm"), "snapkv" (the chunk's own last Window tokens vote, as
	// SnapKV's window does over a prompt) or "h2o" (H2O's heavy hitters:
	// every token of every chunk so far votes, votes accumulate, and the
	// last Window positions stay). "" means DefaultChunkPolicy, keydiff,
	// which kept the most pass keys of them (docs/CHUNKED.md).
	ChunkPolicy string `json:"chunk_policy"`
}

// Defaults of the chunked prefill (Compression.Chunk, ChunkPolicy).
const (
	DefaultChunk       = 512
	DefaultChunkPolicy = "keydiff"
)

// ChunkH2O is the chunk policy of accumulated attention (H2O's heavy
// hitters), which is not a prompt-time policy of its own.
const ChunkH2O = "h2o"

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

// decodeEntry is the compression's decode-time policy, as the policy
// (asPolicy) or as the decode policy after a prompt-time one.
func (c Compression) decodeEntry() (p policies.DecodePolicy, asPolicy, ok bool) {
	if p, ok := policies.LookupDecode(c.Policy); ok {
		return p, true, true
	}
	if d := c.decodePolicy(); d != "" {
		p, ok := policies.LookupDecode(d)
		return p, false, ok
	}
	return policies.DecodePolicy{}, false, false
}

// decodeOptions is the decode-time policy's settings, for a budget of
// cells (see policies.DecodeOptions.Budget).
func (c Compression) decodeOptions(budget int, asPolicy bool) policies.DecodeOptions {
	return policies.DecodeOptions{
		Budget: budget, Ratio: c.Ratio, Heavy: c.Heavy, Recent: c.Recent, Sinks: c.Sinks,
		EvictEvery: c.EvictEvery, AsPolicy: asPolicy,
	}
}

// PolicyNames are every policy's name: none, the prompt-time policies,
// then the decode-time ones.
func PolicyNames() []string {
	return slices.Concat([]string{PolicyNone}, policies.PromptNames(), policies.DecodeNames())
}

// DecodePolicyNames are the decode-time policies' names: what
// DecodePolicy takes, and what evicts while generating as the Policy.
func DecodePolicyNames() []string { return policies.DecodeNames() }

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
// generates (a decode-time policy, as the policy or the decode policy):
// its cache is not a prefix of the sequence that later tokens can extend.
func (c Compression) EvictsWhileDecoding() bool {
	_, _, ok := c.decodeEntry()
	return ok
}

// Shifts reports whether the decode-time policy shifts positions
// (StreamingLLM), so that the cache must be able to.
func (c Compression) Shifts() bool {
	p, _, ok := c.decodeEntry()
	return ok && p.Shifts
}

// DecodeCells is the most cells the decode-time policy holds while
// decoding, when its settings say (0 otherwise: none, or a Ratio of a
// prompt not known yet).
func (c Compression) DecodeCells() int {
	p, asPolicy, ok := c.decodeEntry()
	if !ok || p.Cells == nil {
		return 0
	}
	return p.Cells(c.decodeOptions(c.Budget, asPolicy))
}

// AnyPromptLength reports whether a prompt of any length fits in a fixed
// cache: a shifting policy run from the prompt on evicts while it
// prefills.
func (c Compression) AnyPromptLength() bool {
	p, asPolicy, ok := c.decodeEntry()
	return ok && asPolicy && p.Shifts
}

// Appendable reports whether a cache this compression made can take more
// tokens after it (Session.Append, Truncate): the next turn of a
// conversation whose earlier turns are cached, compressed or not.
func (c Compression) Appendable() bool { return !c.EvictsWhileDecoding() }

// NeedsOwnContext reports whether the compression needs a llama.cpp
// context of its own rather than a sequence of a shared one (Group): a
// decode-time policy that observes every decoded token does so through
// its decoding context's eval callback.
func (c Compression) NeedsOwnContext() bool {
	p, _, ok := c.decodeEntry()
	return ok && p.Observes == policies.ObservesSteps
}

// Fit fills the settings a decode-time policy leaves unset for a budget
// of cells (kvtrim eval's budgets: StreamingLLM's sinks and window, H2O's
// heavy hitters and window).
func (c Compression) Fit(budget int) Compression {
	p, asPolicy, ok := c.decodeEntry()
	if !ok || p.Fit == nil {
		return c
	}
	o := c.decodeOptions(c.Budget, asPolicy)
	p.Fit(&o, budget)
	c.Heavy, c.Recent, c.Sinks, c.EvictEvery = o.Heavy, o.Recent, o.Sinks, o.EvictEvery
	return c
}

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
	if c.ChunkPolicy == "" {
		c.ChunkPolicy = DefaultChunkPolicy
	}
	return c
}

// Check validates the settings that do not depend on the prompt.
func (c Compression) Check() error {
	if !c.Evicts() {
		return nil
	}
	if d, ok := policies.LookupDecode(c.Policy); ok {
		if dp := c.decodePolicy(); dp != "" {
			return fmt.Errorf("decode policy %s after policy %s: %s evicts while generating already; drop the decode policy", dp, c.Policy, c.Policy)
		}
		return d.Check(c.decodeOptions(c.Budget, true))
	}
	if _, ok := c.promptPolicy(); !ok {
		return fmt.Errorf("unknown policy %q: use %s", c.Policy, strings.Join(PolicyNames(), ", "))
	}
	if dp := c.decodePolicy(); dp != "" {
		d, ok := policies.LookupDecode(dp)
		if !ok {
			return fmt.Errorf("decode policy %q: use %s (or none)", dp, strings.Join(policies.DecodeNames(), ", "))
		}
		if err := d.Check(c.decodeOptions(c.Budget, false)); err != nil {
			return err
		}
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
	if p, _ := c.promptPolicy(); p.Check != nil {
		if err := p.Check(c.promptOptions()); err != nil {
			return fmt.Errorf("%s: %w", p.Name, err)
		}
	}
	if _, err := c.chunkPolicy(); err != nil {
		return err
	}
	if c.Budget > 0 && c.Chunk > 0 {
		return checkChunkWindow(c.Chunk, c.WindowFor(c.Budget))
	}
	return nil
}

// checkChunkWindow refuses a chunk not larger than the window, which every
// eviction between chunks keeps whole.
func checkChunkWindow(chunk, window int) error {
	if chunk <= window {
		return fmt.Errorf("chunk %d must be larger than the window %d, which every eviction between chunks keeps whole", chunk, window)
	}
	return nil
}

// ChunkPolicyNames are the policies a chunked prefill can evict with
// between chunks: those that need neither the prompt's end nor its
// queries.
func ChunkPolicyNames() []string {
	out := []string{ChunkH2O}
	for _, name := range policies.PromptNames() {
		if p, _ := policies.LookupPrompt(name); p.Observes == policies.ObservesWindow || p.Observes == policies.ObservesKeys {
			out = append(out, name)
		}
	}
	return out
}

// chunkPolicy is the registered policy ChunkPolicy names; for ChunkH2O,
// a policy with only its name, which observes the window.
func (c Compression) chunkPolicy() (policies.Policy, error) {
	name := c.withDefaults().ChunkPolicy
	if !slices.Contains(ChunkPolicyNames(), name) {
		return policies.Policy{}, fmt.Errorf("chunk policy %q: use %s", name, strings.Join(ChunkPolicyNames(), ", "))
	}
	if name == ChunkH2O {
		return policies.Policy{Name: name, Observes: policies.ObservesWindow}, nil
	}
	p, _ := policies.LookupPrompt(name)
	return p, nil
}

// chunkFor is the chunk a prompt of n tokens compressed to budget cells is
// prefilled in, with a session context of nctx cells: 0 for one go (the
// prompt whole in a context of its own), with a note saying why when
// chunking was asked for or needed.
func (c Compression) chunkFor(n, budget, nctx int) (chunk int, note string, err error) {
	window := c.WindowFor(budget)
	switch {
	case c.Chunk < 0:
		return 0, "", nil
	case c.Chunk == 0:
		if n <= nctx {
			return 0, "", nil
		}
		// The chunk's context (budget + chunk + lookahead cells) then fits
		// in -c, not a cell over, which llama.cpp would round up by 256.
		chunk = min(DefaultChunk, nctx-budget-c.lookaheadTokens())
		if chunk <= window {
			return 0, fmt.Sprintf("prefilled in one go: -c %d leaves %d cells beside the budget %d, too few for a chunk larger than the window %d", nctx, nctx-budget, budget, window), nil
		}
	default:
		chunk = c.Chunk
	}
	if err := checkChunkWindow(chunk, window); err != nil {
		return 0, "", err
	}
	switch {
	case chunk > nctx:
		return 0, "", fmt.Errorf("chunk %d is larger than the context's %d cells (-c): lower --chunk or raise -c", chunk, nctx)
	case budget+chunk > nctx:
		return 0, "", fmt.Errorf("budget %d + chunk %d = %d cells is more than the context's %d (-c): the chunks are prefilled beside the kept cells; lower --chunk or the budget, or raise -c", budget, chunk, budget+chunk, nctx)
	case chunk >= n:
		return 0, "", nil // one chunk: the prompt whole
	}
	return chunk, "", nil
}

// promptOptions is the prompt-time policy's settings, defaults filled.
func (c Compression) promptOptions() policies.PromptOptions {
	c = c.withDefaults()
	return policies.PromptOptions{Window: c.Window, Kernel: c.Kernel, Lookahead: c.Lookahead, Pool: c.Pool, Aggregate: c.Aggregate, Seed: c.Seed}
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
