package policies

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestRopeRotationsCompose(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, rope := range []Rope{{Dims: 8, Base: 10000, Scale: 1}, {Neox: true, Dims: 6, Base: 1e6, Scale: 0.25}} {
		x := make([]float32, 8)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		y := slices.Clone(x)
		rope.Rotate(y, 37)
		rope.Rotate(y, -37)
		for i := range x {
			if math.Abs(float64(x[i]-y[i])) > 1e-5 {
				t.Fatalf("%+v: rotating by 37 and back moved value %d from %g to %g", rope, i, x[i], y[i])
			}
		}
		// One position's mean rotation is that rotation.
		a, b := slices.Clone(x), slices.Clone(x)
		rope.Rotate(a, 12)
		rope.MeanRotation(len(b), 12, 1).Turn(b)
		for i := range a {
			if math.Abs(float64(a[i]-b[i])) > 1e-5 {
				t.Fatalf("%+v: mean rotation over one position differs at %d: %g, %g", rope, i, a[i], b[i])
			}
		}
		// Values past Dims never move.
		if z := slices.Clone(x); true {
			rope.Rotate(z, 1000)
			for i := rope.Dims; i < len(z); i++ {
				if z[i] != x[i] {
					t.Errorf("%+v: value %d past the rotated dims moved", rope, i)
				}
			}
		}
	}
}
