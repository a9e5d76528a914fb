package policies

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// eaReference is Expected Attention written out in float64 with explicit
// matrices: each query row turned back by its position with a d x d
// rotation, the mean and the d x d covariance, both moved by the mean of
// the d x d rotations over the future positions, then
// softmax(mu.k/sqrt(d) + k'Sigma k/(2d)) over the keys after the sinks,
// averaged over each KV head's query heads, times the value's norm; the
// sinks get the largest score.
func eaReference(p Prompt, k, v Keys, rows [][]float32, n int) []float64 {
	d, kvHeads, total, m := k.HeadDim, k.KVHeads, p.Len, len(rows)
	group := p.Heads / kvHeads
	sinks := min(eaSinks, n)
	rot := func(pos float64) [][]float64 { // the d x d rotation at pos
		r := make([][]float64, d)
		for i := range r {
			r[i] = make([]float64, d)
			r[i][i] = 1
		}
		for i := range p.Rope.pairs(d) {
			a, b := p.Rope.at(i)
			sin, cos := math.Sincos(pos * p.Rope.freq(i))
			r[a][a], r[a][b], r[b][a], r[b][b] = cos, -sin, sin, cos
		}
		return r
	}
	mul := func(r [][]float64, x []float64) []float64 {
		y := make([]float64, d)
		for i := range d {
			for j := range d {
				y[i] += r[i][j] * x[j]
			}
		}
		return y
	}
	mean := make([][]float64, d) // future rotation, averaged
	for i := range mean {
		mean[i] = make([]float64, d)
	}
	for f := total; f < total+eaFuturePositions; f++ {
		r := rot(float64(f))
		for i := range d {
			for j := range d {
				mean[i][j] += r[i][j] / eaFuturePositions
			}
		}
	}
	expected := make([][]float64, kvHeads)
	for g := range expected {
		expected[g] = make([]float64, total)
	}
	for h := range p.Heads {
		qs := make([][]float64, m)
		mu := make([]float64, d)
		for t, row := range rows {
			x := make([]float64, d)
			for j := range d {
				x[j] = float64(row[h*d+j])
			}
			qs[t] = mul(rot(-float64(total-m+t)), x)
			for j := range d {
				mu[j] += qs[t][j] / float64(m)
			}
		}
		sigma := make([][]float64, d)
		for i := range sigma {
			sigma[i] = make([]float64, d)
			for j := range d {
				for _, q := range qs {
					sigma[i][j] += (q[i] - mu[i]) * (q[j] - mu[j]) / float64(m)
				}
			}
		}
		mu = mul(mean, mu)
		// mean x sigma x mean'
		ms := make([][]float64, d)
		for i := range d {
			ms[i] = make([]float64, d)
			for j := range d {
				for l := range d {
					ms[i][j] += mean[i][l] * sigma[l][j]
				}
			}
		}
		s2 := make([][]float64, d)
		for i := range d {
			s2[i] = make([]float64, d)
			for j := range d {
				for l := range d {
					s2[i][j] += ms[i][l] * mean[j][l]
				}
			}
		}
		g := h / group
		z := make([]float64, total)
		top := math.Inf(-1)
		for i := sinks; i < total; i++ {
			key := k.Row(i, g)
			for a := range d {
				z[i] += mu[a] * float64(key[a]) / math.Sqrt(float64(d))
				for b := range d {
					z[i] += float64(key[a]) * s2[a][b] * float64(key[b]) / float64(2*d)
				}
			}
			top = max(top, z[i])
		}
		sum := 0.0
		for i := sinks; i < total; i++ {
			z[i] = math.Exp(z[i] - top)
			sum += z[i]
		}
		for i := sinks; i < total; i++ {
			expected[g][i] += z[i] / sum / float64(group)
		}
	}
	out := make([]float64, kvHeads*n)
	for g := range kvHeads {
		top := 0.0
		for i := sinks; i < n; i++ {
			norm := 0.0
			for _, x := range v.Row(i, g) {
				norm += float64(x) * float64(x)
			}
			out[g*n+i] = expected[g][i] * math.Sqrt(norm)
			top = max(top, out[g*n+i])
		}
		for i := range sinks {
			out[g*n+i] = top
		}
	}
	return out
}

func TestExpectedAttentionMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, c := range []struct {
		name                     string
		rope                     Rope
		heads, kvHeads, d, m, ln int
	}{
		{"llama rope, GQA", Rope{Dims: 8, Base: 10000, Scale: 1}, 4, 2, 8, 6, 40},
		{"neox rope, partial", Rope{Neox: true, Dims: 4, Base: 500, Scale: 0.5}, 2, 2, 8, 12, 30},
		{"no rope, one row", Rope{}, 3, 1, 4, 1, 20},
	} {
		k, v := randomKeys(r, c.ln, c.kvHeads, c.d), randomKeys(r, c.ln, c.kvHeads, c.d)
		rows := make([][]float32, c.m)
		for i := range rows {
			rows[i] = make([]float32, c.heads*c.d)
			for j := range rows[i] {
				rows[i][j] = float32(r.NormFloat64())
			}
		}
		p := Prompt{Len: c.ln, Heads: c.heads, Rope: c.rope,
			Queries: func(int) ([][]float32, error) { return rows, nil },
			Values:  func(int) (Keys, error) { return v, nil }}
		n := c.ln - 3
		got := make([]float32, c.kvHeads*n)
		if err := expectedAttentionScores(p, 0, k, n, got); err != nil {
			t.Fatal(err)
		}
		want := eaReference(p, k, v, rows, n)
		for i := range want {
			if d := math.Abs(float64(got[i]) - want[i]); d > 1e-4*max(1, math.Abs(want[i])) {
				t.Fatalf("%s: score %d is %g, want %g", c.name, i, got[i], want[i])
			}
		}
	}
}

// TestExpectedAttentionPrefersExpectedKeys: keys along the mean query
// (once turned to the future positions) are kept before keys against it.
func TestExpectedAttentionPrefersExpectedKeys(t *testing.T) {
	const d, ln, window = 4, 16, 2
	rope := Rope{Dims: 4, Base: 10000, Scale: 1}
	q := []float32{3, 0, 0, 3}
	rows := [][]float32{slices.Clone(q)}
	rope.Rotate(rows[0], ln-1) // the last prompt query, after RoPE
	future := rope.MeanRotation(d, ln, eaFuturePositions)
	along := slices.Clone(q)
	future.Turn(along)
	k := Keys{KVHeads: 1, HeadDim: d, Rows: make([]float32, ln*d)}
	v := Keys{KVHeads: 1, HeadDim: d, Rows: make([]float32, ln*d)}
	for i := range ln {
		for j := range d {
			k.Rows[i*d+j] = -along[j] / 3
			v.Rows[i*d+j] = 1
		}
	}
	for _, i := range []int{6, 9, 11} { // these look where the queries will
		for j := range d {
			k.Rows[i*d+j] = along[j] / 3
		}
	}
	p := Prompt{Len: ln, Budget: eaSinks + 3 + window, Window: window, KVHeads: 1, Layers: 1, Heads: 1, Rope: rope, Agg: AggMax,
		Keys:    func(int) (Keys, error) { return k, nil },
		Values:  func(int) (Keys, error) { return v, nil },
		Queries: func(int) ([][]float32, error) { return rows, nil }}
	got, err := expectedAttention.Select(p)
	if want := []int{0, 1, 2, 3, 6, 9, 11, 14, 15}; err != nil || !slices.Equal(got, want) {
		t.Errorf("kept %v (%v), want %v: the sinks, the keys along the expected query, the window", got, err, want)
	}
}
