package policies

import "fmt"

// DotHeads computes one cached key row's dot products with every query
// head of a decode step: out[h] = q[h*dim:][:dim] · row[(h/group)*dim:][:dim],
// where len(q)/dim is the number of query heads and group of them share
// each key head (grouped-query attention). Walking the cache row by row,
// with all the heads of a row in one call, reads each row once and in
// order, which is what a step over keys that are no longer in the CPU's
// caches needs. On amd64 with AVX2 and FMA, when dim is a multiple of 8, an
// assembly loop runs it.
func DotHeads(out, q, row []float32, dim, group int) {
	checkDotHeads("DotHeads", len(out), len(q), len(row), dim, group)
	if haveDotHeadsAsm && dim%8 == 0 {
		dotHeadsAsm(out, q, row, dim, group)
		return
	}
	dotHeadsGo(out, q, row, dim, group)
}

// DotHeadsF16 is DotHeads over a key row of raw F16 values, as llama.cpp's
// K cache holds them, converted as they are read: a step can then read the
// cache in place rather than from a float32 copy twice its size.
func DotHeadsF16(out, q []float32, row []uint16, dim, group int) {
	checkDotHeads("DotHeadsF16", len(out), len(q), len(row), dim, group)
	if haveDotHeadsAsm && dim%8 == 0 {
		dotHeadsF16Asm(out, q, row, dim, group)
		return
	}
	dotHeadsF16Go(out, q, row, dim, group)
}

// checkDotHeads panics unless the lengths fit DotHeads' arguments: the
// assembly loops trust them.
func checkDotHeads(name string, nOut, nQ, nRow, dim, group int) {
	if dim < 1 || group < 1 || nQ%dim != 0 || (nQ/dim)%group != 0 {
		panic(fmt.Sprintf("policies.%s: %d query values, heads of %d, groups of %d", name, nQ, dim, group))
	}
	if heads := nQ / dim; nOut < heads || nRow < heads/group*dim {
		panic(fmt.Sprintf("policies.%s: %d outputs and %d key values for %d heads of %d in groups of %d", name, nOut, nRow, heads, dim, group))
	}
}

// dotHeadsF16Go is DotHeadsF16 in Go.
func dotHeadsF16Go(out, q []float32, row []uint16, dim, group int) {
	keys := make([]float32, len(q)/dim/group*dim)
	F16ToF32(keys, row[:len(keys)])
	dotHeadsGo(out, q, keys, dim, group)
}

// dotHeadsGo is DotHeads in Go.
func dotHeadsGo(out, q, row []float32, dim, group int) {
	for h := range len(q) / dim {
		kv := h / group
		out[h] = Dot(q[h*dim:][:dim], row[kv*dim:][:dim])
	}
}
