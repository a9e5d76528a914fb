package policies

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// testLengths are the slice lengths the kernels are tested at: empty,
// around the unroll widths, and a long odd one.
var testLengths = []int{0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 127, 128, 1000, 4097}

// randomFloats returns n values uniform in [lo, hi).
// randomNormal returns n standard normal values (random queries and keys).
func randomNormal(rng *rand.Rand, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(rng.NormFloat64())
	}
	return out
}

func randomFloats(rng *rand.Rand, n int, lo, hi float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = lo + (hi-lo)*rng.Float32()
	}
	return x
}

// closeTo reports |got-want| <= abs + rel*|want|.
func closeTo(got, want, abs, rel float64) bool {
	return math.Abs(got-want) <= abs+rel*math.Abs(want)
}

func TestDot(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range testLengths {
		a, b := randomFloats(rng, n, -2, 2), randomFloats(rng, n, -2, 2)
		var magnitude float64
		for i := range a {
			magnitude += math.Abs(float64(a[i]) * float64(b[i]))
		}
		got, want := Dot(a, b), dotRef(a, b)
		if !closeTo(float64(got), float64(want), 1e-6*magnitude+1e-30, 0) {
			t.Errorf("n=%d: Dot = %v, reference %v", n, got, want)
		}
	}
}

func TestDotPanicsOnLengthMismatch(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Dot of lengths 3 and 2 did not panic")
		}
	}()
	Dot(make([]float32, 3), make([]float32, 2))
}

// exp32 returns e^x as Softmax computes it, through expShiftSum.
func exp32(x float32) float32 {
	v := [1]float32{x}
	expShiftSum(v[:], 0)
	return v[0]
}

func TestExpAccuracy(t *testing.T) {
	worst, worstX := 0.0, float32(0)
	check := func(x float32) {
		want := math.Exp(float64(x))
		e := math.Abs(float64(exp32(x))-want) / want
		if e > worst {
			worst, worstX = e, x
		}
	}
	for b := uint32(0); b < math.MaxUint32-4099; b += 4099 {
		if x := math.Float32frombits(b); x >= expFastMin && x <= expFastMax {
			check(x)
		}
	}
	for x := float32(expFastMin); x <= expFastMax; x += 1.0 / 64 {
		check(x)
	}
	t.Logf("largest relative error %.3g at x=%v", worst, worstX)
	if worst > 1.5e-7 {
		t.Errorf("exp32 relative error %.3g at x=%v, want <= 1.5e-7", worst, worstX)
	}
	if exp32(0) != 1 {
		t.Errorf("exp32(0) = %v, want 1", exp32(0))
	}
	for x, want := range map[float32]float32{
		-1000: 0, -104: 0, -87.5: 0, float32(math.Inf(-1)): 0, // flushed to zero
		88.5: float32(math.Inf(1)), 1000: float32(math.Inf(1)), float32(math.Inf(1)): float32(math.Inf(1)),
	} {
		if got := exp32(x); got != want {
			t.Errorf("exp32(%v) = %v, want %v", x, got, want)
		}
	}
	if got := exp32(float32(math.NaN())); got == got {
		t.Errorf("exp32(NaN) = %v, want NaN", got)
	}
}

func TestSoftmax(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range testLengths {
		for _, spread := range []float32{1, 20, 300} {
			x := randomFloats(rng, n, -spread, spread)
			want := slices.Clone(x)
			softmaxRef(want)
			Softmax(x)
			var sum float64
			for i := range x {
				sum += float64(x[i])
				if !closeTo(float64(x[i]), float64(want[i]), 1e-12, 1e-6) {
					t.Fatalf("n=%d spread=%v: [%d] = %v, reference %v", n, spread, i, x[i], want[i])
				}
			}
			if n > 0 && !closeTo(sum, 1, 1e-5, 0) {
				t.Errorf("n=%d spread=%v: sum %v, want 1", n, spread, sum)
			}
		}
	}
}

func TestPool1D(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range testLengths {
		src := randomFloats(rng, n, 0, 4)
		for _, kernel := range []int{1, 3, 5, 7, 9, 11, 15, 17, 33, 4099} {
			for _, mode := range []Pooling{PoolAvg, PoolMax} {
				got := make([]float32, n)
				Pool1D(got, src, kernel, mode)
				want := make([]float32, n)
				poolRef(want, src, kernel, mode)
				for i := range got {
					if mode == PoolMax && got[i] != want[i] ||
						mode == PoolAvg && !closeTo(float64(got[i]), float64(want[i]), 1e-7, 1e-6) {
						t.Fatalf("n=%d kernel=%d %v: [%d] = %v, reference %v", n, kernel, mode, i, got[i], want[i])
					}
				}
			}
		}
	}
}

func TestPool1DHandValues(t *testing.T) {
	src := []float32{3, 0, 6, 0, 9}
	avg := make([]float32, 5)
	Pool1D(avg, src, 3, PoolAvg)
	if want := []float32{1, 3, 2, 5, 3}; !slices.Equal(avg, want) {
		t.Errorf("avg pool = %v, want %v (padding counts as zeros)", avg, want)
	}
	mx := make([]float32, 5)
	Pool1D(mx, []float32{-1, -5, -2, -7, -3}, 3, PoolMax)
	if want := []float32{-1, -1, -2, -2, -3}; !slices.Equal(mx, want) {
		t.Errorf("max pool = %v, want %v (padding ignored)", mx, want)
	}
}

func TestPool1DPanics(t *testing.T) {
	for _, kernel := range []int{0, -1, 2, 4} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("kernel %d did not panic", kernel)
				}
			}()
			Pool1D(make([]float32, 4), make([]float32, 4), kernel, PoolAvg)
		}()
	}
}

// topKInputs returns score slices of length n that stress selection:
// random, few distinct values, sorted both ways, constant, and with NaN.
func topKInputs(rng *rand.Rand, n int) map[string][]float32 {
	in := map[string][]float32{
		"random":    randomFloats(rng, n, -1, 1),
		"few":       make([]float32, n),
		"ascending": make([]float32, n),
		"constant":  make([]float32, n),
		"nan":       randomFloats(rng, n, -1, 1),
	}
	for i := range n {
		in["few"][i] = float32(rng.IntN(4))
		in["ascending"][i] = float32(i)
		if i%3 == 0 {
			in["nan"][i] = float32(math.NaN())
		}
	}
	in["descending"] = slices.Clone(in["ascending"])
	slices.Reverse(in["descending"])
	return in
}

func TestTopK(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range testLengths {
		for name, scores := range topKInputs(rng, n) {
			for _, k := range []int{-1, 0, 1, 2, n / 3, n / 2, n - 1, n, n + 1} {
				got, want := TopK(scores, k), topKRef(scores, k)
				if !slices.Equal(got, want) {
					t.Fatalf("%s n=%d k=%d: TopK = %v, reference %v", name, n, k, got, want)
				}
				if got == nil {
					t.Fatalf("%s n=%d k=%d: TopK returned nil", name, n, k)
				}
			}
		}
	}
}

func TestF16ToF32Exhaustive(t *testing.T) {
	src := make([]uint16, 1<<16)
	for i := range src {
		src[i] = uint16(i)
	}
	dst := make([]float32, len(src))
	F16ToF32(dst, src)
	for i, h := range src {
		got, want := dst[i], f16ToF32Ref(h)
		if want != want {
			// NaN: the sign and payload are kept.
			wantBits := uint32(h&0x8000)<<16 | 0x7f800000 | uint32(h&0x3ff)<<13
			if got == got || math.Float32bits(got) != wantBits {
				t.Fatalf("%#04x: got bits %#08x, want NaN %#08x", h, math.Float32bits(got), wantBits)
			}
			continue
		}
		if math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("%#04x: got %v (%#08x), want %v (%#08x)", h, got, math.Float32bits(got), want, math.Float32bits(want))
		}
	}
	for _, c := range []struct {
		h    uint16
		want float32
	}{{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 5.9604645e-08}, {0x0400, 6.1035156e-05}} {
		if got := dst[c.h]; got != c.want {
			t.Errorf("%#04x: got %v, want %v", c.h, got, c.want)
		}
	}
	if math.Float32bits(dst[0x8000]) != 0x80000000 {
		t.Errorf("-0 converted to %#08x", math.Float32bits(dst[0x8000]))
	}
}

// TestDotHeads: a step's query heads against indexed key rows equal
// float64 reference dots, through the assembly loops and through Go, for
// head sizes that are and are not multiples of 8 and 16, with and without
// grouped-query attention, with float32 and F16 keys.
func TestDotHeads(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	rows := []int{3, 0, 9, 3, 7, 8}
	for _, dim := range []int{1, 7, 8, 16, 24, 64, 72, 128} {
		for _, shape := range [][2]int{{1, 1}, {12, 1}, {8, 4}, {32, 4}} {
			heads, group := shape[0], shape[1]
			rowLen := heads/group*dim + 3 // rows with room to spare
			q := make([]float32, heads*dim)
			for i := range q {
				q[i] = r.Float32()*2 - 1
			}
			// Random F16 keys (normal values of magnitude 2^-5 to 2^5), and
			// the same values as float32.
			keys16 := make([]uint16, 10*rowLen)
			for i := range keys16 {
				keys16[i] = uint16(r.IntN(2))<<15 | uint16(10+r.IntN(11))<<10 | uint16(r.IntN(1024))
			}
			keys := make([]float32, len(keys16))
			F16ToF32(keys, keys16)
			want := make([]float64, heads*len(rows))
			for p, row := range rows {
				for h := range heads {
					for d := range dim {
						want[h*len(rows)+p] += float64(q[h*dim+d]) * float64(keys[row*rowLen+h/group*dim+d])
					}
				}
			}
			check := func(name string, got []float32) {
				t.Helper()
				for i := range want {
					if math.Abs(float64(got[i])-want[i]) > 1e-5*(1+math.Abs(want[i]))*float64(dim) {
						t.Fatalf("%s dim %d, %d heads in groups of %d, output %d: %g, want %g", name, dim, heads, group, i, got[i], want[i])
					}
				}
			}
			out := make([]float32, len(want))
			DotHeads(out, q, keys, rows, rowLen, dim, group)
			check("DotHeads", out)
			out = make([]float32, len(want))
			DotHeadsF16(out, q, keys16, rows, rowLen, dim, group)
			check("DotHeadsF16", out)
			if haveDotHeadsAsm && dim%8 == 0 {
				// The Go loops too, which other machines run.
				asm := haveDotHeadsAsm
				haveDotHeadsAsm = false
				out = make([]float32, len(want))
				DotHeads(out, q, keys, rows, rowLen, dim, group)
				check("DotHeads in Go", out)
				out = make([]float32, len(want))
				DotHeadsF16(out, q, keys16, rows, rowLen, dim, group)
				check("DotHeadsF16 in Go", out)
				haveDotHeadsAsm = asm
			}
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("a row past the keys did not panic")
		}
	}()
	DotHeads(make([]float32, 2), make([]float32, 16), make([]float32, 16), []int{1}, 9, 8, 2)
}

// TestLogSumExp: the shifted log-sum-exp equals the plain one where that
// does not overflow, and stays finite where it would.
func TestLogSumExp(t *testing.T) {
	x := []float32{-3, 0.5, 2, 7, -40}
	want := 0.0
	for _, v := range x {
		want += math.Exp(float64(v))
	}
	if got := LogSumExp(x); math.Abs(got-math.Log(want)) > 1e-12 {
		t.Errorf("LogSumExp %v = %g, want %g", x, got, math.Log(want))
	}
	if got := LogSumExp([]float32{1000, 1000}); math.Abs(got-(1000+math.Ln2)) > 1e-9 {
		t.Errorf("LogSumExp of large logits = %g, want %g", got, 1000+math.Ln2)
	}
}
