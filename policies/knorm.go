package policies

import "github.com/viterin/vek/vek32"

// knorm is Knorm (Devoto et al. 2024, "A Simple and Effective L2
// Norm-Based Strategy for KV Cache Compression"): the keys with the lowest
// L2 norm draw the most attention, so they are kept. It reads keys only.
// RoPE rotates pairs of a key's values, so the cache's keys have the norms
// of the keys before it.
var knorm = Policy{
	Name:        "knorm",
	Summary:     "the keys with the lowest L2 norm (Knorm)",
	Observes:    ObservesKeys,
	KeepsWindow: true,
	Options:     []string{"window", "aggregate"},
	Check:       checkAggregation,
	Select:      func(p Prompt) ([]int, error) { return selectByHeadScores(p, knormScores) },
}

// knormScores scores each KV head's positions by how much smaller their
// key's norm is than the head's largest: >= 0, the lowest norm highest.
func knormScores(k Keys, n int, dst []float32) {
	for h := range k.KVHeads {
		s := dst[h*n:][:n]
		top := float32(0)
		for i := range n {
			s[i] = vek32.Norm(k.Row(i, h))
			top = max(top, s[i])
		}
		for i := range s {
			s[i] = top - s[i]
		}
	}
}
