package policies

import "golang.org/x/sys/cpu"

// haveDotHeadsAsm is whether dotHeadsAsm and dotHeadsF16Asm can run here:
// AVX2 and FMA (every such CPU also has F16C, which the F16 loop uses).
var haveDotHeadsAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// dotHeadsAsm is DotHeads' AVX2 loop, for a dim that is a multiple of 8 and
// at least one row; the caller has checked the arguments.
//
//go:noescape
func dotHeadsAsm(out, q, keys []float32, rows []int, rowLen, dim, group int)

// dotHeadsF16Asm is DotHeadsF16's AVX2 loop, on the same terms.
//
//go:noescape
func dotHeadsF16Asm(out, q []float32, keys []uint16, rows []int, rowLen, dim, group int)
