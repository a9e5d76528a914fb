#include "textflag.h"

// The two functions below share their layout:
//
//	func(out, q []float32, keys []T, rows []int, rowLen, dim, group int)
//
// For each row p and query head h: out[h*len(rows)+p] is the dot product of
// q[h*dim:][:dim] with the key head h/group of row rows[p]. Registers:
// R10 the next row index, CX the rows left, R11 the keys, R8 a row's bytes,
// R9 dim, R12 group, DX this row's first output, AX this head's output,
// SI the query values, DI the key values, R13 the heads left on this key
// head, BX the elements left. Locals: the end of q, and the bytes from one
// head's outputs to the next's.

// PROLOGUE loads the arguments; SHIFT is log2 of a key's size.
#define PROLOGUE(SHIFT) \
	MOVQ out_base+0(FP), DX \
	MOVQ q_base+24(FP), SI \
	MOVQ q_len+32(FP), BX \
	LEAQ (SI)(BX*4), BX \
	MOVQ BX, qend-8(SP) \
	MOVQ keys_base+48(FP), R11 \
	MOVQ rows_base+72(FP), R10 \
	MOVQ rows_len+80(FP), CX \
	MOVQ CX, BX \
	SHLQ $2, BX \
	MOVQ BX, stride-16(SP) \
	MOVQ rowLen+96(FP), R8 \
	SHLQ $SHIFT, R8 \
	MOVQ dim+104(FP), R9 \
	MOVQ group+112(FP), R12

// ROWSTART points SI at the first query head, DI at row rows[p] and AX at
// its first output.
#define ROWSTART \
	MOVQ  q_base+24(FP), SI \
	MOVQ  (R10), DI \
	IMULQ R8, DI \
	ADDQ  R11, DI \
	MOVQ  DX, AX \
	MOVQ  R12, R13

// HEADSTART clears the accumulators and counts dim elements.
#define HEADSTART \
	VXORPS Y0, Y0, Y0 \
	VXORPS Y1, Y1, Y1 \
	MOVQ   R9, BX

// HEADEND stores the dot product at AX, moves AX to the next head's
// output, and rewinds DI to the same key head while the group lasts
// (SHIFT as in PROLOGUE).
#define HEADEND(SHIFT, samekv, nexthead) \
	VADDPS       Y1, Y0, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS       X1, X0, X0 \
	VHADDPS      X0, X0, X0 \
	VHADDPS      X0, X0, X0 \
	VMOVSS       X0, (AX) \
	ADDQ         stride-16(SP), AX \
	DECQ         R13 \
	JNE          samekv \
	MOVQ         R12, R13 \
	JMP          nexthead \
samekv: \
	MOVQ R9, BX \
	SHLQ $SHIFT, BX \
	SUBQ BX, DI \
nexthead:

// ROWEND moves on to the next row, or returns.
#define ROWEND(head, row) \
	CMPQ SI, qend-8(SP) \
	JB   head \
	ADDQ $4, DX \
	ADDQ $8, R10 \
	DECQ CX \
	JNE  row \
	VZEROUPPER \
	RET

// func dotHeadsAsm(out, q, keys []float32, rows []int, rowLen, dim, group int)
TEXT ·dotHeadsAsm(SB), NOSPLIT, $16-120
	PROLOGUE(2)

row:
	ROWSTART

head:
	HEADSTART

by16:
	CMPQ BX, $16
	JLT  by8
	VMOVUPS     (SI), Y2
	VMOVUPS     32(SI), Y3
	VFMADD231PS (DI), Y2, Y0
	VFMADD231PS 32(DI), Y3, Y1
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, BX
	JMP  by16

by8:
	CMPQ BX, $8
	JLT  sum
	VMOVUPS     (SI), Y2
	VFMADD231PS (DI), Y2, Y0
	ADDQ $32, SI
	ADDQ $32, DI

sum:
	HEADEND(2, samekv, nexthead)
	ROWEND(head, row)

// func dotHeadsF16Asm(out, q []float32, keys []uint16, rows []int, rowLen, dim, group int)
TEXT ·dotHeadsF16Asm(SB), NOSPLIT, $16-120
	PROLOGUE(1)

f16row:
	ROWSTART

f16head:
	HEADSTART

f16by16:
	CMPQ BX, $16
	JLT  f16by8
	VMOVUPS     (SI), Y2
	VMOVUPS     32(SI), Y3
	VCVTPH2PS   (DI), Y4
	VCVTPH2PS   16(DI), Y5
	VFMADD231PS Y4, Y2, Y0
	VFMADD231PS Y5, Y3, Y1
	ADDQ $64, SI
	ADDQ $32, DI
	SUBQ $16, BX
	JMP  f16by16

f16by8:
	CMPQ BX, $8
	JLT  f16sum
	VMOVUPS     (SI), Y2
	VCVTPH2PS   (DI), Y4
	VFMADD231PS Y4, Y2, Y0
	ADDQ $32, SI
	ADDQ $16, DI

f16sum:
	HEADEND(1, f16samekv, f16nexthead)
	ROWEND(f16head, f16row)
