package policies

import (
	"fmt"
	"math"
	"math/bits"
)

// F16ToF32 converts IEEE 754 half-precision values (as their bit patterns,
// the layout of ggml's F16 tensors) to float32. len(dst) must equal
// len(src). Every input converts exactly: normal and subnormal numbers, ±0,
// ±Inf, and NaN (sign and payload kept, payload shifted into the top of the
// float32 mantissa).
//
// A normal number, the common case, is converted in the loop with one
// unsigned compare, a shift and an add that rebiases the exponent; zeros,
// subnormals, Inf and NaN go to f16SpecialBits.
func F16ToF32(dst []float32, src []uint16) {
	if len(dst) != len(src) {
		panic(fmt.Sprintf("policies.F16ToF32: dst has %d elements, src %d", len(dst), len(src)))
	}
	const (
		minNormalExp = 0x0400 // exponent field 1
		maxNormalExp = 0x7800 // exponent field 30
		// A half exponent e (bias 15) becomes e+112 (bias 127).
		rebias = (127 - 15) << 23
	)
	for i, h := range src {
		if exp := uint32(h) & f16ExpMask; exp-minNormalExp <= maxNormalExp-minNormalExp {
			dst[i] = math.Float32frombits(uint32(h&0x8000)<<16 | (uint32(h&0x7fff)<<13 + rebias))
		} else {
			dst[i] = math.Float32frombits(f16SpecialBits(h))
		}
	}
}

// f16ExpMask selects a half's exponent field.
const f16ExpMask = 0x7c00

// f16SpecialBits returns the float32 bit pattern of a half h whose exponent
// field is 0 (zero or subnormal) or all ones (Inf or NaN).
func f16SpecialBits(h uint16) uint32 {
	sign := uint32(h&0x8000) << 16
	mant := uint32(h & 0x3ff)
	if uint32(h)&f16ExpMask == f16ExpMask {
		// Inf (zero mantissa) or NaN: all exponent bits set.
		return sign | 0x7f800000 | mant<<13
	}
	if mant == 0 {
		return sign
	}
	// Subnormal: mant * 2^-24. With its top set bit at p (0..9) this is
	// 2^(p-24) * (mant / 2^p), a normal float32 with exponent field p+103.
	p := 31 - bits.LeadingZeros32(mant)
	frac := (mant << (23 - p)) & 0x7fffff
	return sign | uint32(p+103)<<23 | frac
}
