package server

import (
	"fmt"

	"github.com/kvtrim/kvtrim"
)

// compressionFields are a request's "kvtrim" object: overrides of the
// server's KV compression for that request, named as kvtrim's flags are.
type compressionFields struct {
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
}

// apply returns base with the given fields replaced, checked as the
// command line's are. A budget given alone drops the base's ratio and the
// other way round, so that a request can switch between them.
func (f *compressionFields) apply(base kvtrim.Compression) (kvtrim.Compression, error) {
	c := base
	setStr(&c.Policy, f.Policy)
	setStr(&c.Pool, f.Pool)
	setStr(&c.Aggregate, f.Aggregate)
	setStr(&c.DecodePolicy, f.DecodePolicy)
	setInt(&c.Window, f.Window)
	setInt(&c.Kernel, f.Kernel)
	setInt(&c.Sinks, f.Sinks)
	setInt(&c.Recent, f.Recent)
	setInt(&c.Heavy, f.Heavy)
	setInt(&c.EvictEvery, f.EvictEvery)
	if f.Seed != nil {
		c.Seed = *f.Seed
	}
	switch {
	case f.Budget != nil && f.Ratio == nil:
		c.Budget, c.Ratio = *f.Budget, 0
	case f.Ratio != nil && f.Budget == nil:
		c.Budget, c.Ratio = 0, *f.Ratio
		if c.Policy == kvtrim.PolicyH2O && f.Heavy == nil && f.Recent == nil {
			c.Heavy, c.Recent = 0, 0
		}
	case f.Ratio != nil && f.Budget != nil:
		c.Budget, c.Ratio = *f.Budget, *f.Ratio
	}
	if c.Policy == kvtrim.PolicyH2O && (f.Heavy != nil || f.Recent != nil) && f.Ratio == nil {
		c.Ratio = 0
	}
	if f.Lookahead != nil {
		switch v := *f.Lookahead; {
		case v < 0:
			return c, fmt.Errorf("lookahead %d: give a count of tokens >= 0", v)
		case v == 0:
			c.Lookahead = -1 // none, as --lookahead 0
		default:
			c.Lookahead = v
		}
	}
	if f.Window != nil && *f.Window < 1 {
		return c, fmt.Errorf("window %d: give at least 2", *f.Window)
	}
	if f.Kernel != nil && *f.Kernel < 1 {
		return c, fmt.Errorf("kernel %d: give an odd width >= 1", *f.Kernel)
	}
	if c.Streams() && f.EvictEvery == nil && (c.EvictEvery == 0 || f.Recent != nil || f.Policy != nil || f.DecodePolicy != nil) {
		c.EvictEvery = kvtrim.DefaultEvictEvery(c.Recent)
	}
	if err := c.Check(); err != nil {
		return c, err
	}
	return c, nil
}

func setStr(dst *string, v *string) {
	if v != nil {
		*dst = *v
	}
}

func setInt(dst *int, v *int) {
	if v != nil {
		*dst = *v
	}
}
