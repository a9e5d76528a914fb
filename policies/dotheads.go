package policies

import "fmt"

// DotHeads computes a decode step's query heads against many cached key
// rows: for each p, out[h*len(rows)+p] = q[h*dim:][:dim] ·
// keys[rows[p]*rowLen+(h/group)*dim:][:dim], where len(q)/dim is the number
// of query heads and group of them share each key head (grouped-query
// attention). It walks the rows in the given order, all the heads of a row
// at once, so that each row is read once and in order, which is what a step
// over keys that are no longer in the CPU's caches needs. On amd64 with
// AVX2 and FMA, when dim is a multiple of 8, an assembly loop runs it.
func DotHeads(out, q, keys []float32, rows []int, rowLen, dim, group int) {
	checkDotHeads("DotHeads", len(out), len(q), len(keys), rows, rowLen, dim, group)
	if len(rows) == 0 {
		return
	}
	if haveDotHeadsAsm && dim%8 == 0 {
		dotHeadsAsm(out, q, keys, rows, rowLen, dim, group)
		return
	}
	for p, r := range rows {
		for h := range len(q) / dim {
			out[h*len(rows)+p] = Dot(q[h*dim:][:dim], keys[r*rowLen+h/group*dim:][:dim])
		}
	}
}

// DotHeadsF16 is DotHeads over keys of raw F16 values, as llama.cpp's K
// cache holds them, converted as they are read: a step can then read the
// cache in place rather than a float32 copy twice its size.
func DotHeadsF16(out, q []float32, keys []uint16, rows []int, rowLen, dim, group int) {
	checkDotHeads("DotHeadsF16", len(out), len(q), len(keys), rows, rowLen, dim, group)
	if len(rows) == 0 {
		return
	}
	if haveDotHeadsAsm && dim%8 == 0 {
		dotHeadsF16Asm(out, q, keys, rows, rowLen, dim, group)
		return
	}
	heads := len(q) / dim
	row := make([]float32, heads/group*dim)
	for p, r := range rows {
		F16ToF32(row, keys[r*rowLen:][:len(row)])
		for h := range heads {
			out[h*len(rows)+p] = Dot(q[h*dim:][:dim], row[h/group*dim:][:dim])
		}
	}
}

// checkDotHeads panics unless the arguments fit DotHeads': the assembly
// loops trust them.
func checkDotHeads(name string, nOut, nQ, nKeys int, rows []int, rowLen, dim, group int) {
	if dim < 1 || group < 1 || nQ%dim != 0 || (nQ/dim)%group != 0 {
		panic(fmt.Sprintf("policies.%s: %d query values, heads of %d, groups of %d", name, nQ, dim, group))
	}
	heads := nQ / dim
	if need := heads / group * dim; rowLen < need {
		panic(fmt.Sprintf("policies.%s: rows of %d values for %d key heads of %d", name, rowLen, heads/group, dim))
	}
	if nOut < heads*len(rows) {
		panic(fmt.Sprintf("policies.%s: %d outputs for %d heads and %d rows", name, nOut, heads, len(rows)))
	}
	for _, r := range rows {
		if r < 0 || (r+1)*rowLen > nKeys {
			panic(fmt.Sprintf("policies.%s: row %d is outside %d keys of rows of %d", name, r, nKeys, rowLen))
		}
	}
}
