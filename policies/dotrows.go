package policies

import "fmt"

// DotRows computes out[p] = q · keys[rows[p]*stride:][:len(q)] for every p:
// one query against many key rows of a strided store (a cache's rows, in
// cell order), as a decode step's attention scores need. It is one call
// where Dot would be one per row, which is what costs at a head size of 64;
// on amd64 with AVX2 and FMA, when len(q) is a multiple of 8, an assembly
// loop runs it.
func DotRows(out, q, keys []float32, rows []int, stride int) {
	dim := len(q)
	if len(out) < len(rows) {
		panic(fmt.Sprintf("policies.DotRows: %d outputs for %d rows", len(out), len(rows)))
	}
	for _, r := range rows {
		if r < 0 || r*stride+dim > len(keys) {
			panic(fmt.Sprintf("policies.DotRows: row %d of stride %d is outside %d keys", r, stride, len(keys)))
		}
	}
	if len(rows) == 0 || dim == 0 {
		clear(out[:len(rows)])
		return
	}
	if haveDotRowsAsm && dim%8 == 0 {
		dotRowsAsm(out, q, keys, rows, stride)
		return
	}
	dotRowsGo(out, q, keys, rows, stride)
}

// dotRowsGo is DotRows in Go, eight partial sums at a time.
func dotRowsGo(out, q, keys []float32, rows []int, stride int) {
	for p, r := range rows {
		out[p] = Dot(q, keys[r*stride:][:len(q)])
	}
}
