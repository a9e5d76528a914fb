package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
)

// Type is a tensor element type, numbered as ggml's enum ggml_type.
type Type uint32

// The tensor types the writer encodes.
const (
	TypeF32  Type = 0 // 32-bit IEEE floats
	TypeF16  Type = 1 // 16-bit IEEE floats
	TypeQ8_0 Type = 8 // blocks of 32: an F16 scale and 32 int8 quants
)

// q8Block is the number of elements in a Q8_0 block; q8Bytes is its size.
const (
	q8Block = 32
	q8Bytes = 2 + q8Block
)

// ParseType reads a type name as Shape.Type spells it: "f32", "f16" or
// "q8_0" (case-insensitive).
func ParseType(name string) (Type, error) {
	switch strings.ToLower(name) {
	case "f32":
		return TypeF32, nil
	case "f16":
		return TypeF16, nil
	case "q8_0":
		return TypeQ8_0, nil
	}
	return 0, fmt.Errorf("tensor type %q: want f32, f16 or q8_0", name)
}

// String is the type's lower-case name ("f32", "f16", "q8_0").
func (t Type) String() string {
	switch t {
	case TypeF32:
		return "f32"
	case TypeF16:
		return "f16"
	case TypeQ8_0:
		return "q8_0"
	}
	return fmt.Sprintf("ggml_type(%d)", uint32(t))
}

// valid reports whether the writer can encode t.
func (t Type) valid() bool {
	return t == TypeF32 || t == TypeF16 || t == TypeQ8_0
}

// BlockSize is the number of elements encoded together: 32 for Q8_0, 1
// otherwise. A tensor's first dimension must be a multiple of it.
func (t Type) BlockSize() int {
	if t == TypeQ8_0 {
		return q8Block
	}
	return 1
}

// blockBytes is the encoded size of one block.
func (t Type) blockBytes() int {
	switch t {
	case TypeF32:
		return 4
	case TypeF16:
		return 2
	case TypeQ8_0:
		return q8Bytes
	}
	return 0
}

// Bytes is the encoded size of n elements (n a multiple of BlockSize).
func (t Type) Bytes(n int64) int64 {
	return n / int64(t.BlockSize()) * int64(t.blockBytes())
}

// Encode appends src encoded as t to dst. len(src) must be a multiple of
// t.BlockSize(), and Q8_0 needs finite values.
func (t Type) Encode(dst []byte, src []float32) ([]byte, error) {
	if !t.valid() {
		return dst, fmt.Errorf("encode %s: unsupported type", t)
	}
	if len(src)%t.BlockSize() != 0 {
		return dst, fmt.Errorf("encode %s: %d values is not a whole number of %d-value blocks", t, len(src), t.BlockSize())
	}
	switch t {
	case TypeF32:
		for _, v := range src {
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
		}
	case TypeF16:
		for _, v := range src {
			dst = binary.LittleEndian.AppendUint16(dst, f16Bits(v))
		}
	case TypeQ8_0:
		for i := 0; i < len(src); i += q8Block {
			var err error
			if dst, err = appendQ8Block(dst, src[i:i+q8Block]); err != nil {
				return dst, fmt.Errorf("encode q8_0 block %d: %w", i/q8Block, err)
			}
		}
	}
	return dst, nil
}

// appendQ8Block quantises 32 values: the scale d is the largest magnitude
// over 127, stored as F16, and each quant is the value over d rounded to
// the nearest integer (halves away from zero), as ggml's reference does.
func appendQ8Block(dst []byte, x []float32) ([]byte, error) {
	var amax float32
	for _, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return dst, fmt.Errorf("value %v is not finite", v)
		}
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	d := amax / 127
	var id float32
	if d != 0 {
		id = 1 / d
	}
	dst = binary.LittleEndian.AppendUint16(dst, f16Bits(d))
	for _, v := range x {
		q := math.Round(float64(v * id))
		dst = append(dst, byte(int8(max(-127, min(127, q)))))
	}
	return dst, nil
}

// f16Bits converts f to the bits of the nearest IEEE half-precision float
// (ties to even); magnitudes too large become infinities, too small zeros
// or subnormals, and NaNs stay NaNs.
func f16Bits(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15 // the half's biased exponent
	switch {
	case e >= 0x1f:
		return sign | 0x7c00
	case e >= 1:
		// A normal half: keep the top 10 mantissa bits; a carry out of the
		// mantissa correctly bumps the exponent (up to infinity).
		return sign | uint16(roundShift(uint32(e)<<23|man, 13))
	case e >= -10:
		// A subnormal half: m × 2^-24 with the implicit bit made explicit;
		// rounding up to 0x400 gives the smallest normal, as it should.
		return sign | uint16(roundShift(man|1<<23, uint(14-e)))
	}
	return sign // below half the smallest subnormal
}

// roundShift is x >> s rounded to nearest, ties to even.
func roundShift(x uint32, s uint) uint32 {
	q := x >> s
	rem := x & (1<<s - 1)
	half := uint32(1) << (s - 1)
	if rem > half || rem == half && q&1 == 1 {
		q++
	}
	return q
}
