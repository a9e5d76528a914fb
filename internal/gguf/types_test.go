package gguf

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// f16ToF32 decodes IEEE half-precision bits, for checking the encoder.
func f16ToF32(h uint16) float32 {
	sign := float32(1)
	if h&0x8000 != 0 {
		sign = -1
	}
	exp, man := int(h>>10)&0x1f, float64(h&0x3ff)
	switch exp {
	case 0:
		return sign * float32(math.Ldexp(man, -24))
	case 0x1f:
		if man != 0 {
			return float32(math.NaN())
		}
		return sign * float32(math.Inf(1))
	}
	return sign * float32(math.Ldexp(1024+man, exp-25))
}

func TestF16BitsKnownValues(t *testing.T) {
	for _, c := range []struct {
		f    float32
		want uint16
	}{
		{0, 0x0000},
		{float32(math.Copysign(0, -1)), 0x8000},
		{1, 0x3c00},
		{-2, 0xc000},
		{0.1, 0x2e66},
		{65504, 0x7bff},
		{65519, 0x7bff},        // below the midpoint to infinity
		{65520, 0x7c00},        // the midpoint rounds to even: infinity
		{1e6, 0x7c00},          // overflow
		{1 + 1.0/2048, 0x3c00}, // tie between 1 and 1+2^-10: even
		{1 + 3.0/2048, 0x3c02}, // tie between 1+2^-10 and 1+2^-9: even
		{0x1p-14, 0x0400},      // smallest normal
		{0x1p-24, 0x0001},      // smallest subnormal
		{0x1p-25, 0x0000},      // half of it: tie to even zero
		{0x1.8p-25, 0x0001},
		{0x1p-30, 0x0000},
		{-0x1p-24, 0x8001},
		{0x1.ff8p-15, 0x03ff}, // the largest subnormal
		{0x1.ffcp-15, 0x0400}, // its midpoint with the smallest normal: even
		{float32(math.Inf(1)), 0x7c00},
		{float32(math.Inf(-1)), 0xfc00},
	} {
		if got := f16Bits(c.f); got != c.want {
			t.Errorf("f16Bits(%g) = %#04x, want %#04x", c.f, got, c.want)
		}
	}
	if got := f16Bits(float32(math.NaN())); got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
		t.Errorf("f16Bits(NaN) = %#04x, not a NaN", got)
	}
}

// TestF16BitsExhaustive checks every finite half: it converts back to
// itself, and the midpoint between it and the next rounds to the even one.
func TestF16BitsExhaustive(t *testing.T) {
	for h := uint16(0); h < 0x7c00; h++ {
		for _, sign := range []uint16{0, 0x8000} {
			if got := f16Bits(f16ToF32(h | sign)); got != h|sign {
				t.Fatalf("half %#04x → %g → %#04x", h|sign, f16ToF32(h|sign), got)
			}
		}
		next := h + 1
		if next == 0x7c00 {
			continue // the overflow to infinity is checked above
		}
		mid := (float64(f16ToF32(h)) + float64(f16ToF32(next))) / 2 // exact in float32
		want := h
		if h&1 == 1 {
			want = next
		}
		if got := f16Bits(float32(mid)); got != want {
			t.Fatalf("midpoint %g of %#04x and %#04x → %#04x, want %#04x", mid, h, next, got, want)
		}
		// Just either side of the midpoint rounds to the nearer one.
		if got := f16Bits(math.Nextafter32(float32(mid), 0)); got != h {
			t.Fatalf("just below midpoint %g → %#04x, want %#04x", mid, got, h)
		}
		if got := f16Bits(math.Nextafter32(float32(mid), 1e9)); got != next {
			t.Fatalf("just above midpoint %g → %#04x, want %#04x", mid, got, next)
		}
	}
}

// decodeQ8 dequantises Q8_0 blocks: each value is its quant times the
// block's F16 scale.
func decodeQ8(t *testing.T, b []byte) []float32 {
	t.Helper()
	if len(b)%34 != 0 {
		t.Fatalf("q8_0 data of %d bytes is not whole 34-byte blocks", len(b))
	}
	var out []float32
	for ; len(b) > 0; b = b[34:] {
		d := f16ToF32(binary.LittleEndian.Uint16(b))
		for _, q := range b[2:34] {
			out = append(out, float32(int8(q))*d)
		}
	}
	return out
}

func TestQ8_0KnownBlock(t *testing.T) {
	x := make([]float32, 32)
	for i := range x {
		x[i] = float32(i - 16) // −16 … 15: the scale is 16/127
	}
	b, err := TypeQ8_0.Encode(nil, x)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 34 {
		t.Fatalf("one block encodes to %d bytes, want 34", len(b))
	}
	if d := f16ToF32(binary.LittleEndian.Uint16(b)); math.Abs(float64(d)-16.0/127) > 16.0/127/1024 {
		t.Errorf("scale %g, want %g", d, 16.0/127)
	}
	q := func(i int) int8 { return int8(b[2+i]) }
	// round((i−16)·127/16), halves away from zero.
	for i, want := range map[int]int8{0: -127, 8: -64 /* −63.5 */, 15: -8 /* −7.9375 */, 16: 0, 24: 64 /* 63.5 */, 31: 119 /* 119.0625 */} {
		if q(i) != want {
			t.Errorf("quant %d = %d, want %d", i, q(i), want)
		}
	}
}

func TestQ8_0RoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 32*64)
	for i := range x {
		x[i] = float32(r.NormFloat64()) * float32(1+i/32) // blocks of growing scale
	}
	for i := range 32 {
		x[5*32+i] = 0 // an all-zero block
	}
	b, err := TypeQ8_0.Encode([]byte("prefix"), x)
	if err != nil {
		t.Fatal(err)
	}
	if string(b[:6]) != "prefix" || int64(len(b)-6) != TypeQ8_0.Bytes(int64(len(x))) {
		t.Fatalf("Encode appended %d bytes, want %d after the prefix", len(b)-6, TypeQ8_0.Bytes(int64(len(x))))
	}
	y := decodeQ8(t, b[6:])
	var sumSq, errSq float64
	for blk := 0; blk < len(x); blk += 32 {
		var amax float64
		for _, v := range x[blk : blk+32] {
			amax = max(amax, math.Abs(float64(v)))
		}
		// Rounding to the quant costs half a step; the F16 scale adds
		// at most 127 times its relative error of 2^-11.
		bound := amax/127*0.5 + amax*0x1p-11 + 1e-12
		for i := blk; i < blk+32; i++ {
			e := math.Abs(float64(x[i] - y[i]))
			if e > bound {
				t.Fatalf("value %d: %g decodes to %g, error %g > %g", i, x[i], y[i], e, bound)
			}
			sumSq += float64(x[i]) * float64(x[i])
			errSq += e * e
		}
	}
	if rel := math.Sqrt(errSq / sumSq); rel > 0.01 {
		t.Errorf("relative RMS error %g, want < 1%%", rel)
	}
	if _, err := TypeQ8_0.Encode(nil, x[:31]); err == nil {
		t.Error("encoding 31 values as q8_0 did not fail")
	}
	x[7] = float32(math.NaN())
	if _, err := TypeQ8_0.Encode(nil, x); err == nil {
		t.Error("encoding a NaN as q8_0 did not fail")
	}
}

func TestEncodeF32F16(t *testing.T) {
	x := []float32{1, -2.5, 0x1p-20, 3e38}
	b, err := TypeF32.Encode(nil, x)
	if err != nil || len(b) != 16 {
		t.Fatalf("f32: %d bytes, %v", len(b), err)
	}
	for i, v := range x {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])); got != v {
			t.Errorf("f32 value %d: %g, want %g", i, got, v)
		}
	}
	b, err = TypeF16.Encode(nil, x)
	if err != nil || len(b) != 8 {
		t.Fatalf("f16: %d bytes, %v", len(b), err)
	}
	want := []uint16{0x3c00, 0xc100, f16Bits(0x1p-20), 0x7c00}
	for i, w := range want {
		if got := binary.LittleEndian.Uint16(b[2*i:]); got != w {
			t.Errorf("f16 value %d: %#04x, want %#04x", i, got, w)
		}
	}
	for _, c := range []struct {
		name string
		want Type
	}{{"f32", TypeF32}, {"F16", TypeF16}, {"q8_0", TypeQ8_0}} {
		if got, err := ParseType(c.name); err != nil || got != c.want || got.String() != c.want.String() {
			t.Errorf("ParseType(%q) = %v, %v", c.name, got, err)
		}
	}
	if _, err := ParseType("q4_0"); err == nil {
		t.Error("ParseType(q4_0) did not fail")
	}
}
