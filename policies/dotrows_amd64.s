#include "textflag.h"

// func dotRowsAsm(out, q, keys []float32, rows []int, stride int)
//
// For each p: out[p] = sum over d < len(q) of q[d] * keys[rows[p]*stride + d],
// with two 8-lane FMA accumulators; len(q) is a multiple of 8.
TEXT ·dotRowsAsm(SB), NOSPLIT, $0-104
	MOVQ out_base+0(FP), DX
	MOVQ q_base+24(FP), SI
	MOVQ q_len+32(FP), R9
	MOVQ keys_base+48(FP), R11
	MOVQ rows_base+72(FP), R10
	MOVQ rows_len+80(FP), CX
	MOVQ stride+96(FP), R8
	SHLQ $2, R8               // the stride in bytes
	TESTQ CX, CX
	JEQ  done

row:
	MOVQ  (R10), DI
	IMULQ R8, DI
	ADDQ  R11, DI             // DI: this row's first key
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	XORQ  AX, AX              // the element index
	MOVQ  R9, BX              // elements left

by16:
	CMPQ BX, $16
	JLT  by8
	VMOVUPS     (SI)(AX*4), Y2
	VMOVUPS     32(SI)(AX*4), Y3
	VFMADD231PS (DI)(AX*4), Y2, Y0
	VFMADD231PS 32(DI)(AX*4), Y3, Y1
	ADDQ $16, AX
	SUBQ $16, BX
	JMP  by16

by8:
	CMPQ BX, $8
	JLT  sum
	VMOVUPS     (SI)(AX*4), Y2
	VFMADD231PS (DI)(AX*4), Y2, Y0

sum:
	VADDPS       Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VHADDPS      X0, X0, X0
	VHADDPS      X0, X0, X0
	VMOVSS       X0, (DX)
	ADDQ $4, DX
	ADDQ $8, R10
	DECQ CX
	JNE  row
	VZEROUPPER

done:
	RET
