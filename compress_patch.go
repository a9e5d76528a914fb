package kvtrim

import "fmt"

// CompressionPatch is a partial Compression: the fields a request's
// "kvtrim" object, POST /props or the flags given on a command line set,
// the others nil. Compression.Patch lays it over a base, so that every
// way of choosing a compression follows the same rules.
type CompressionPatch struct {
	Policy       *string  `json:"policy"`
	Budget       *int     `json:"budget"`
	Ratio        *float64 `json:"ratio"`
	Window       *int     `json:"window"`
	Lookahead    *int     `json:"lookahead"`
	Kernel       *int     `json:"kernel"`
	Pool         *string  `json:"pool"`
	Aggregate    *string  `json:"aggregate"`
	DecodePolicy *string  `json:"decode_policy"`
	Sinks        *int     `json:"sinks"`
	Recent       *int     `json:"recent"`
	Heavy        *int     `json:"heavy"`
	EvictEvery   *int     `json:"evict_every"`
	Seed         *uint64  `json:"seed"`
	Chunk        *int     `json:"chunk"`
	ChunkPolicy  *string  `json:"chunk_policy"`
}

// Patch returns c with p's fields laid over it, checked (Check). A budget
// given alone drops c's ratio and the other way round, so that a patch
// can switch between them; so do the counts and the ratio of a policy
// sized by either (H2O's heavy and recent). A lookahead of 0 means none. A
// shifting policy's window given without an eviction stride gets the
// policy's default stride (0; StreamingLLM's is policies.DefaultEvictEvery).
func (c Compression) Patch(p CompressionPatch) (Compression, error) {
	set(&c.Policy, p.Policy)
	set(&c.Pool, p.Pool)
	set(&c.Aggregate, p.Aggregate)
	set(&c.DecodePolicy, p.DecodePolicy)
	set(&c.Window, p.Window)
	set(&c.Kernel, p.Kernel)
	set(&c.Sinks, p.Sinks)
	set(&c.Recent, p.Recent)
	set(&c.Heavy, p.Heavy)
	set(&c.EvictEvery, p.EvictEvery)
	set(&c.Seed, p.Seed)
	set(&c.Chunk, p.Chunk)
	set(&c.ChunkPolicy, p.ChunkPolicy)
	switch {
	case p.Budget != nil && p.Ratio == nil:
		c.Budget, c.Ratio = *p.Budget, 0
	case p.Ratio != nil && p.Budget == nil:
		c.Budget, c.Ratio = 0, *p.Ratio
		if c.ratioOrCounts() && p.Heavy == nil && p.Recent == nil {
			c.Heavy, c.Recent = 0, 0
		}
	case p.Ratio != nil && p.Budget != nil:
		c.Budget, c.Ratio = *p.Budget, *p.Ratio
	}
	if c.ratioOrCounts() && (p.Heavy != nil || p.Recent != nil) && p.Ratio == nil {
		c.Ratio = 0
	}
	if p.Lookahead != nil {
		switch v := *p.Lookahead; {
		case v < 0:
			return c, fmt.Errorf("lookahead %d: give a count of tokens >= 0", v)
		case v == 0:
			c.Lookahead = -1 // none
		default:
			c.Lookahead = v
		}
	}
	if p.Window != nil && (*p.Window < 0 || *p.Window == 1) {
		return c, fmt.Errorf("window %d: give at least 2 (0: adapt to the budget)", *p.Window)
	}
	if p.Kernel != nil && *p.Kernel < 1 {
		return c, fmt.Errorf("kernel %d: give an odd width >= 1", *p.Kernel)
	}
	if c.Shifts() && p.EvictEvery == nil && (p.Recent != nil || p.Policy != nil || p.DecodePolicy != nil) {
		c.EvictEvery = 0
	}
	return c, c.Check()
}

func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

// ratioOrCounts reports whether the policy is a decode-time one sized by
// a Ratio or by its own counts, not both (policies.DecodePolicy).
func (c Compression) ratioOrCounts() bool {
	p, asPolicy, ok := c.decodeEntry()
	return ok && asPolicy && p.RatioOrCounts
}
