package policies

import "math"

// Rope is a model's rotary position embedding, as llama.cpp applies it:
// pair i of the first Dims values of each head is turned by the angle
// position x Scale x Base^(-2i/Dims); Neox pairs value i with i + Dims/2,
// the other layout (llama's) adjacent values. The zero value rotates
// nothing (a model without RoPE).
type Rope struct {
	Neox        bool
	Dims        int
	Base, Scale float64
}

// pairs is the number of rotated pairs in a head of d values.
func (r Rope) pairs(d int) int { return min(r.Dims, d) / 2 }

// at is the indices of pair i's two values.
func (r Rope) at(i int) (a, b int) {
	if r.Neox {
		return i, i + r.Dims/2
	}
	return 2 * i, 2*i + 1
}

// freq is pair i's angle per position.
func (r Rope) freq(i int) float64 {
	scale := r.Scale
	if scale == 0 {
		scale = 1
	}
	return scale * math.Pow(r.Base, -2*float64(i)/float64(r.Dims))
}

// Rotate turns one head's values x by position pos, as the model does (a
// negative pos turns them back).
func (r Rope) Rotate(x []float32, pos float64) {
	for i := range r.pairs(len(x)) {
		sin, cos := math.Sincos(pos * r.freq(i))
		r.turn(x, i, cos, sin)
	}
}

// turn applies [[cos, -sin], [sin, cos]] to pair i of x.
func (r Rope) turn(x []float32, i int, cos, sin float64) {
	a, b := r.at(i)
	xa, xb := float64(x[a]), float64(x[b])
	x[a] = float32(xa*cos - xb*sin)
	x[b] = float32(xa*sin + xb*cos)
}

// MeanRotation is the rotation averaged over positions from .. from+n-1,
// for a head of d values: per pair, the mean cosine and sine. Applied
// with Turn, it moves a query without position to where the queries at
// those positions are on average.
func (r Rope) MeanRotation(d, from, n int) MeanRotation {
	m := MeanRotation{rope: r, cos: make([]float64, r.pairs(d)), sin: make([]float64, r.pairs(d))}
	for i := range m.cos {
		f := r.freq(i)
		for p := from; p < from+n; p++ {
			sin, cos := math.Sincos(float64(p) * f)
			m.cos[i] += cos
			m.sin[i] += sin
		}
		m.cos[i] /= float64(n)
		m.sin[i] /= float64(n)
	}
	return m
}

// MeanRotation is a Rope's rotation averaged over positions
// (Rope.MeanRotation).
type MeanRotation struct {
	rope     Rope
	cos, sin []float64
}

// Turn applies the mean rotation to one head's values x.
func (m MeanRotation) Turn(x []float32) {
	for i := range m.cos {
		m.rope.turn(x, i, m.cos[i], m.sin[i])
	}
}
