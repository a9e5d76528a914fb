//go:build !amd64

package policies

const haveDotHeadsAsm = false

func dotHeadsAsm(out, q, row []float32, dim, group int) {
	dotHeadsGo(out, q, row, dim, group)
}

func dotHeadsF16Asm(out, q []float32, row []uint16, dim, group int) {
	dotHeadsF16Go(out, q, row, dim, group)
}
