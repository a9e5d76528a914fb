package policies

import (
	"fmt"
	"math"
)

// Expected Attention (Devoto et al. 2025, NVIDIA kvpress): score each key
// by the attention the queries still to come are expected to give it.
// The recent queries, turned back to no position, give a mean and a
// covariance per head; the mean rotation over the next
// eaFuturePositions positions moves both to where future queries will be.
// For a Gaussian query q ~ N(mu, Sigma) the expected exp(q.k/sqrt(d)) is
// exp(mu.k/sqrt(d) + k'Sigma k/(2d)); a softmax over the keys of that
// exponent, averaged over the query heads that share a KV head and
// multiplied by the norm of the key's value, scores the position. The
// first eaSinks positions (attention sinks) score highest.
//
// Here the statistics are those of the prompt's last QueryRows queries
// (kvpress takes every prompt query but the sinks'), read after RoPE
// from the graph and turned back by their positions. Covariance terms
// are summed over the centred queries, which costs one dot product per
// query row and key, as few as the d x d form costs when there are no more
// rows than a head has values.
var expectedAttention = Policy{
	Name:        "expected-attention",
	Summary:     "the attention future queries are expected to give each key, from the recent queries' mean and covariance (Expected Attention)",
	Observes:    ObservesQueries,
	KeepsWindow: true,
	Options:     []string{"window", "aggregate"},
	Check:       checkAggregation,
	QueryRows:   64,
	Select: func(p Prompt) ([]int, error) {
		if p.Queries == nil || p.Values == nil || p.Heads < 1 {
			return nil, fmt.Errorf("expected-attention needs the prompt's queries, keys and values")
		}
		return selectByLayerScores(p, func(il int, k Keys, n int, dst []float32) error {
			return expectedAttentionScores(p, il, k, n, dst)
		})
	},
}

// Expected Attention's settings, kvpress's defaults.
const (
	eaFuturePositions = 512
	eaSinks           = 4
)

// expectedAttentionScores fills dst[g*n+i], for KV head g and position
// i < n, with layer il's expected attention times the value's norm.
func expectedAttentionScores(p Prompt, il int, k Keys, n int, dst []float32) error {
	rows, err := p.Queries(il)
	if err != nil {
		return err
	}
	vals, err := p.Values(il)
	if err != nil {
		return err
	}
	d, kvHeads, total := k.HeadDim, k.KVHeads, p.Len
	m := len(rows)
	switch {
	case m == 0:
		return fmt.Errorf("no query rows observed")
	case p.Heads%kvHeads != 0:
		return fmt.Errorf("%d query heads over %d KV heads", p.Heads, kvHeads)
	case len(rows[0]) != p.Heads*d:
		return fmt.Errorf("query rows of %d values, want %d heads x %d", len(rows[0]), p.Heads, d)
	case len(vals.Rows) < total*kvHeads*d:
		return fmt.Errorf("values for %d positions, want %d", len(vals.Rows)/(kvHeads*d), total)
	}
	group := p.Heads / kvHeads
	sinks := min(eaSinks, n)
	end := total // the position after the last key's
	if p.End > 0 {
		end = p.End
	}
	future := p.Rope.MeanRotation(d, end, eaFuturePositions)
	pos0 := end - m
	mean := make([]float32, d)
	centred := make([]float32, m*d) // then turned by the mean rotation
	logits := make([]float32, total)
	expected := make([]float32, kvHeads*total) // per KV head, averaged over its group
	scale := 1 / float32(math.Sqrt(float64(d)))
	cov := 1 / float32(2*d*m)
	for h := range p.Heads {
		g := h / group
		clear(mean)
		for t, row := range rows {
			q := centred[t*d:][:d]
			copy(q, row[h*d:][:d])
			p.Rope.Rotate(q, -float64(pos0+t))
			Add(mean, q)
		}
		for j := range mean {
			mean[j] /= float32(m)
		}
		for t := range m {
			q := centred[t*d:][:d]
			for j := range q {
				q[j] -= mean[j]
			}
			future.Turn(q)
		}
		future.Turn(mean)
		for i := sinks; i < total; i++ {
			key := k.Row(i, g)
			z := Dot(mean, key) * scale
			var spread float32
			for t := range m {
				x := Dot(centred[t*d:][:d], key)
				spread += x * x
			}
			logits[i] = z + spread*cov
		}
		Softmax(logits[sinks:])
		Add(expected[g*total+sinks:][:total-sinks], logits[sinks:])
	}
	for g := range kvHeads {
		s := dst[g*n:][:n]
		e := expected[g*total:][:total]
		top := float32(0)
		for i := sinks; i < n; i++ {
			s[i] = e[i] / float32(group) * Norm(vals.Row(i, g))
			top = max(top, s[i])
		}
		for i := range sinks {
			s[i] = top
		}
	}
	return nil
}
