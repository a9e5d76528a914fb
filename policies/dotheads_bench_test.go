package policies

import (
	"math/rand/v2"
	"testing"
)

// stepShape is a decode step of the 125m shape: 12 heads of 64 over 256
// kept cells scattered in 1024.
func stepShape() (q, keys []float32, rows []int) {
	const heads, dim, cells, kept = 12, 64, 1024, 256
	r := rand.New(rand.NewPCG(1, 2))
	q = make([]float32, heads*dim)
	keys = make([]float32, cells*heads*dim)
	for i := range q {
		q[i] = r.Float32()
	}
	for i := range keys {
		keys[i] = r.Float32()
	}
	rows = r.Perm(cells)[:kept]
	return q, keys, rows
}

func BenchmarkStepDotPerRow(b *testing.B) {
	q, keys, rows := stepShape()
	const heads, dim = 12, 64
	out := make([]float32, heads*len(rows))
	for b.Loop() {
		for p, c := range rows {
			row := keys[c*heads*dim:][:heads*dim]
			for h := range heads {
				out[h*len(rows)+p] = Dot(q[h*dim:][:dim], row[h*dim:][:dim])
			}
		}
	}
}

func BenchmarkStepDotHeads(b *testing.B) {
	q, keys, rows := stepShape()
	const heads, dim = 12, 64
	out := make([]float32, heads*len(rows))
	for b.Loop() {
		DotHeads(out, q, keys, rows, heads*dim, dim, 1)
	}
}
