package policies

import "golang.org/x/sys/cpu"

// haveDotRowsAsm is whether dotRowsAsm can run here.
var haveDotRowsAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// dotRowsAsm is DotRows' AVX2 loop, for a len(q) that is a multiple of 8;
// the caller has checked the bounds.
//
//go:noescape
func dotRowsAsm(out, q, keys []float32, rows []int, stride int)
