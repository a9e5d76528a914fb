package policies

import (
	"fmt"
	"math"

	"github.com/viterin/vek/vek32"
)

// dotSIMD is the length from which Dot hands over to vek's AVX2 kernel
// (where the CPU has it): below it the call costs more than it saves
// (BenchmarkDot: 3.3x faster at 64 values, slower at 8).
const dotSIMD = 32

// Dot returns the dot product of a and b, which must have the same length.
// Short vectors keep eight independent partial sums, so consecutive
// multiply-adds do not wait on each other, added pairwise at the end; long
// ones use vek's SIMD kernel. Either can differ from a left-to-right sum in
// the last bits.
func Dot(a, b []float32) float32 {
	if len(a) != len(b) {
		panic(fmt.Sprintf("policies.Dot: lengths %d and %d differ", len(a), len(b)))
	}
	if len(a) >= dotSIMD {
		return vek32.Dot(a, b)
	}
	b = b[:len(a)]
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		x := a[i : i+8 : i+8]
		y := b[i : i+8 : i+8]
		s0 += x[0] * y[0]
		s1 += x[1] * y[1]
		s2 += x[2] * y[2]
		s3 += x[3] * y[3]
		s4 += x[4] * y[4]
		s5 += x[5] * y[5]
		s6 += x[6] * y[6]
		s7 += x[7] * y[7]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}

// Softmax replaces x by softmax(x) = exp(x - max) / sum(exp(x - max)).
// Subtracting the maximum keeps every exponent <= 0, so nothing overflows.
// From vekMinLen values up the exponentials come from vek's AVX2 kernel;
// shorter rows use expShiftSum (a float32 range-reduction and polynomial
// exp, summed in float64). An empty x is left alone.
func Softmax(x []float32) {
	if len(x) == 0 {
		return
	}
	if len(x) >= vekMinLen {
		// vek's AVX2 exponential, 8 lanes at a time. It is wrong below
		// about -88 (it does not underflow to 0), so exponents are clamped
		// there: exp(-87) is 1.6e-38, zero for a probability.
		vek32.AddNumber_Inplace(x, -vek32.Max(x))
		vek32.MaximumNumber_Inplace(x, -87)
		vek32.Exp_Inplace(x)
		vek32.MulNumber_Inplace(x, 1/vek32.Sum(x))
		return
	}
	sum := expShiftSum(x, maxFloat32(x))
	scaleFloat32(x, float32(1/sum))
}

// vekMinLen is the length from which vek's vector kernels beat the
// unrolled loops here (their call and setup cost more on short rows).
const vekMinLen = 64

// maxFloat32 returns the largest element of a non-empty x, using four
// independent running maxima.
func maxFloat32(x []float32) float32 {
	m0 := x[0]
	m1, m2, m3 := m0, m0, m0
	i := 0
	for ; i+4 <= len(x); i += 4 {
		v := x[i : i+4 : i+4]
		m0 = max(m0, v[0])
		m1 = max(m1, v[1])
		m2 = max(m2, v[2])
		m3 = max(m3, v[3])
	}
	for ; i < len(x); i++ {
		m0 = max(m0, x[i])
	}
	return max(max(m0, m1), max(m2, m3))
}

// Scale multiplies every element of x by s.
func Scale(x []float32, s float32) {
	if len(x) >= vekMinLen {
		vek32.MulNumber_Inplace(x, s)
		return
	}
	scaleFloat32(x, s)
}

// scaleFloat32 multiplies every element of x by s.
func scaleFloat32(x []float32, s float32) {
	for i := range x {
		x[i] *= s
	}
}

// LogSumExp is log(sum(exp(x))), computed in float64 after shifting by the
// largest value: the normaliser of a log-softmax over logits.
func LogSumExp(x []float32) float64 {
	hi := math.Inf(-1)
	for _, v := range x {
		hi = max(hi, float64(v))
	}
	sum := 0.0
	for _, v := range x {
		sum += math.Exp(float64(v) - hi)
	}
	return hi + math.Log(sum)
}

// Norm is the L2 norm of x.
func Norm(x []float32) float32 { return float32(math.Sqrt(float64(Dot(x, x)))) }

// Add adds src to dst element by element; len(src) must be at least
// len(dst).
func Add(dst, src []float32) {
	if len(dst) >= vekMinLen {
		vek32.Add_Inplace(dst, src[:len(dst)])
		return
	}
	addFloat32(dst, src)
}

// addFloat32 adds src to dst element by element; len(src) must be at least
// len(dst).
func addFloat32(dst, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] += src[i]
	}
}

// Constants of expShiftSum. ln2Hi has only nine significant bits, so
// n*ln2Hi is exact for the exponents expShiftSum uses; ln2Lo is
// ln(2) - ln2Hi rounded to float32. roundMagic is 1.5*2^23: adding it to a
// float32 of magnitude below 2^22 rounds that value to an integer held in
// the low mantissa bits. expShiftSum takes its polynomial path for
// arguments in [expFastMin, expFastMax].
const (
	log2e      = 1.44269504088896340736
	ln2Hi      = 0.693359375
	ln2Lo      = -2.12194440e-4
	roundMagic = 12582912.0
	expFastMin = -87.0
	expFastMax = 88.0
)

// expShiftSum replaces every x[i] by e^(x[i]-shift) and returns the sum of
// the results in float64. Softmax calls it with shift = max(x), so every
// exponent d = x[i]-shift is <= 0.
//
// For d in [-87, 88], where the result and the 2^n below are normal float32
// numbers, it writes d = n*ln2 + r with integer n and |r| <= ln2/2,
// evaluates the degree-7 Taylor polynomial of e^r (truncation error below
// 1e-8 relative) in float32 by Estrin's scheme (short dependency chains) and
// puts n into the exponent field. Its relative error against math.Exp,
// measured over every 13th float32 bit pattern in that range (172 million
// values), is at most 8.6e-8; TestExpAccuracy checks a sample against
// 1.5e-7. Below -87 the
// result is flushed to 0 (the true value is below 1.7e-38, far below what
// a softmax can resolve next to its maximum's 1); above 88 it is +Inf, and
// NaN stays NaN. The loop makes no calls, so its state stays in registers.
func expShiftSum(x []float32, shift float32) float64 {
	inf := math.Float32frombits(0x7f800000)
	var sum float64
	for i, v := range x {
		d := v - shift
		var e float32
		switch {
		case d >= expFastMin && d <= expFastMax:
			t := d*log2e + roundMagic
			n := int32(math.Float32bits(t)) - int32(math.Float32bits(roundMagic))
			nf := t - roundMagic
			r := d - nf*ln2Hi - nf*ln2Lo
			r2 := r * r
			q01 := 0.5 + r*(1.0/6)
			q23 := 1.0/24 + r*(1.0/120)
			q45 := 1.0/720 + r*(1.0/5040)
			q := q01 + r2*(q23+r2*q45)
			e = (1 + (r + r2*q)) * math.Float32frombits(uint32(n+127)<<23)
		case d < expFastMin:
			e = 0
		default:
			e = d * inf // +Inf above the range, NaN for NaN
		}
		x[i] = e
		sum += float64(e)
	}
	return sum
}

// Pool1D writes into dst the 1-D pooling of src with stride 1 and kernel/2
// padding on both sides, so len(dst) == len(src). kernel must be odd and
// positive; dst and src must not overlap.
//
// PoolAvg divides the sum of the kernel neighbours by kernel at every
// position, the padding counting as zeros (PyTorch's count_include_pad). It
// slides one float64 running sum along src, adding the entering and
// removing the leaving value in one step, so its cost does not depend on
// kernel. PoolMax takes the largest in-range neighbour (padding ignored) by
// repeated doubling of window maxima in dst, O(len(src)*log2(kernel)).
func Pool1D(dst, src []float32, kernel int, mode Pooling) {
	if len(dst) != len(src) {
		panic(fmt.Sprintf("policies.Pool1D: dst has %d elements, src %d", len(dst), len(src)))
	}
	if kernel < 1 || kernel%2 == 0 {
		panic(fmt.Sprintf("policies.Pool1D: kernel %d is not odd and positive", kernel))
	}
	switch mode {
	case PoolAvg:
		avgPool(dst, src, kernel)
	case PoolMax:
		maxPool(dst, src, kernel)
	default:
		panic(fmt.Sprintf("policies.Pool1D: unknown pooling %d", int(mode)))
	}
}

// avgPool is Pool1D's PoolAvg. The window of position i is
// [i-half, i+half]; src[i+half] enters it and src[i-half-1] leaves it.
func avgPool(dst, src []float32, kernel int) {
	n, half := len(src), kernel/2
	inv := 1 / float64(kernel)
	var sum float64
	for j := 0; j < half && j < n; j++ {
		sum += float64(src[j])
	}
	i := 0
	for ; i < n && i <= half; i++ { // nothing has left yet
		if i+half < n {
			sum += float64(src[i+half])
		}
		dst[i] = float32(sum * inv)
	}
	if i < n-half { // one enters, one leaves
		out := dst[i : n-half]
		enter := src[i+half:][:len(out)]
		leave := src[i-half-1:][:len(out)]
		for j := range out {
			sum += float64(enter[j]) - float64(leave[j])
			out[j] = float32(sum * inv)
		}
		i = n - half
	}
	for ; i < n; i++ { // nothing enters any more
		sum -= float64(src[i-half-1])
		dst[i] = float32(sum * inv)
	}
}

// maxPool is Pool1D's PoolMax. With F_s[j] = max(src[j .. j+s-1]) (cut at
// the end of src), it builds F_kernel in dst by doubling s (F_2s[j] =
// max(F_s[j], F_s[j+s])) and one last overlapping step, shifts it right by
// half (position i's window starts at i-half), and fills the first half
// positions, whose windows are cut at 0, from a running maximum.
func maxPool(dst, src []float32, kernel int) {
	n, half := len(src), kernel/2
	if n == 0 {
		return
	}
	copy(dst, src)
	s := 1
	for ; 2*s <= kernel; s *= 2 {
		maxWithAhead(dst, s)
	}
	if s < kernel {
		maxWithAhead(dst, kernel-s)
	}
	if n > half {
		copy(dst[half:], dst[:n-half])
	}
	m, next := src[0], 1
	for i := 0; i < half && i < n; i++ {
		for ; next <= i+half && next < n; next++ {
			m = max(m, src[next])
		}
		dst[i] = m
	}
}

// maxWithAhead sets v[j] = max(v[j], v[j+s]) for every j with j+s in v,
// in ascending j, so each v[j+s] is read before it changes.
func maxWithAhead(v []float32, s int) {
	if s >= len(v) {
		return
	}
	ahead := v[s:]
	head := v[:len(ahead)]
	for j := range head {
		head[j] = max(head[j], ahead[j])
	}
}
