#include "textflag.h"

// LOADARGS loads the arguments of func(out, q []float32, row []T, dim,
// group int): DX out, SI q, CX the query values left, R8 the first key
// head's values, R9 dim, R12 group.
#define LOADARGS \
	MOVQ out_base+0(FP), DX \
	MOVQ q_base+24(FP), SI \
	MOVQ q_len+32(FP), CX \
	MOVQ row_base+48(FP), R8 \
	MOVQ dim+72(FP), R9 \
	MOVQ group+80(FP), R12

// STOREDOT adds up the two accumulators Y0 and Y1, stores the sum at DX and
// moves DX and SI on to the next head's output and query.
#define STOREDOT \
	VADDPS       Y1, Y0, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS       X1, X0, X0 \
	VHADDPS      X0, X0, X0 \
	VHADDPS      X0, X0, X0 \
	VMOVSS       X0, (DX) \
	ADDQ         $4, DX \
	LEAQ         (SI)(R9*4), SI \
	SUBQ         R9, CX

// func dotHeadsAsm(out, q, row []float32, dim, group int)
//
// For each query head h (len(q)/dim of them): out[h] is the dot product of
// q[h*dim:][:dim] with row[(h/group)*dim:][:dim], over two 8-lane FMA
// accumulators; dim is a multiple of 8.
TEXT ·dotHeadsAsm(SB), NOSPLIT, $0-88
	LOADARGS
	TESTQ CX, CX
	JEQ  done
	MOVQ R12, R13             // query heads left on this key head

head:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	XORQ AX, AX               // the element index
	MOVQ R9, BX               // elements left

by16:
	CMPQ BX, $16
	JLT  by8
	VMOVUPS     (SI)(AX*4), Y2
	VMOVUPS     32(SI)(AX*4), Y3
	VFMADD231PS (R8)(AX*4), Y2, Y0
	VFMADD231PS 32(R8)(AX*4), Y3, Y1
	ADDQ $16, AX
	SUBQ $16, BX
	JMP  by16

by8:
	CMPQ BX, $8
	JLT  sum
	VMOVUPS     (SI)(AX*4), Y2
	VFMADD231PS (R8)(AX*4), Y2, Y0

sum:
	STOREDOT
	DECQ R13
	JNE  next
	LEAQ (R8)(R9*4), R8       // the next key head
	MOVQ R12, R13

next:
	TESTQ CX, CX
	JNE   head
	VZEROUPPER

done:
	RET

// func dotHeadsF16Asm(out, q []float32, row []uint16, dim, group int)
//
// dotHeadsAsm over F16 keys, converted eight at a time (F16C).
TEXT ·dotHeadsF16Asm(SB), NOSPLIT, $0-88
	LOADARGS
	TESTQ CX, CX
	JEQ  f16done
	MOVQ R12, R13             // query heads left on this key head

f16head:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	XORQ AX, AX               // the element index
	MOVQ R9, BX               // elements left

f16by16:
	CMPQ BX, $16
	JLT  f16by8
	VMOVUPS     (SI)(AX*4), Y2
	VMOVUPS     32(SI)(AX*4), Y3
	VCVTPH2PS   (R8)(AX*2), Y4
	VCVTPH2PS   16(R8)(AX*2), Y5
	VFMADD231PS Y4, Y2, Y0
	VFMADD231PS Y5, Y3, Y1
	ADDQ $16, AX
	SUBQ $16, BX
	JMP  f16by16

f16by8:
	CMPQ BX, $8
	JLT  f16sum
	VMOVUPS     (SI)(AX*4), Y2
	VCVTPH2PS   (R8)(AX*2), Y4
	VFMADD231PS Y4, Y2, Y0

f16sum:
	STOREDOT
	DECQ R13
	JNE  f16next
	LEAQ (R8)(R9*2), R8       // the next key head
	MOVQ R12, R13

f16next:
	TESTQ CX, CX
	JNE   f16head
	VZEROUPPER

f16done:
	RET
