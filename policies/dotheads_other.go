//go:build !amd64

package policies

var haveDotHeadsAsm = false

func dotHeadsAsm(out, q, keys []float32, rows []int, rowLen, dim, group int) {
	panic("policies: no assembly here")
}

func dotHeadsF16Asm(out, q []float32, keys []uint16, rows []int, rowLen, dim, group int) {
	panic("policies: no assembly here")
}
