package policies

import (
	"math/rand/v2"
	"testing"
)

// Benchmarks at the sizes of a 4096-token prompt with 128-dimensional heads;
// each has a "fast" and a "ref" sub-benchmark.

const (
	benchPositions = 4096
	benchHeadDim   = 128
)

func BenchmarkDot(b *testing.B) {
	// One query row against every key of a head: 4096 dots of length 128.
	rng := rand.New(rand.NewPCG(21, 22))
	q := randomFloats(rng, benchHeadDim, -1, 1)
	keys := randomFloats(rng, benchPositions*benchHeadDim, -1, 1)
	out := make([]float32, benchPositions)
	for _, bc := range []struct {
		name string
		dot  func(a, b []float32) float32
	}{{"fast", Dot}, {"ref", dotRef}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				for c := range out {
					out[c] = bc.dot(q, keys[c*benchHeadDim:(c+1)*benchHeadDim])
				}
			}
		})
	}
}

func BenchmarkSoftmax(b *testing.B) {
	rng := rand.New(rand.NewPCG(23, 24))
	logits := randomFloats(rng, benchPositions, -10, 10)
	x := make([]float32, len(logits))
	for _, bc := range []struct {
		name    string
		softmax func([]float32)
	}{{"fast", Softmax}, {"ref", softmaxRef}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				copy(x, logits)
				bc.softmax(x)
			}
		})
	}
}

func BenchmarkPool1D(b *testing.B) {
	rng := rand.New(rand.NewPCG(25, 26))
	src := randomFloats(rng, benchPositions, 0, 1)
	dst := make([]float32, len(src))
	for _, mode := range []Pooling{PoolAvg, PoolMax} {
		b.Run(mode.String()+"/fast", func(b *testing.B) {
			for b.Loop() {
				Pool1D(dst, src, 7, mode)
			}
		})
		b.Run(mode.String()+"/ref", func(b *testing.B) {
			for b.Loop() {
				poolRef(dst, src, 7, mode)
			}
		})
	}
}

func BenchmarkTopK(b *testing.B) {
	// Keep a quarter of 4096 positions.
	rng := rand.New(rand.NewPCG(27, 28))
	scores := randomFloats(rng, benchPositions, 0, 1)
	const k = benchPositions / 4
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			TopK(scores, k)
		}
	})
	b.Run("ref", func(b *testing.B) {
		for b.Loop() {
			topKRef(scores, k)
		}
	})
}

func BenchmarkF16ToF32(b *testing.B) {
	// One head's keys of a 4096-token cache: 4096 x 128 halves, normal
	// numbers of magnitude 2^-10 to 2^6 and either sign, as in a K cache.
	rng := rand.New(rand.NewPCG(29, 30))
	src := make([]uint16, benchPositions*benchHeadDim)
	for i := range src {
		exp := uint16(5 + rng.IntN(16))
		src[i] = uint16(rng.IntN(2))<<15 | exp<<10 | uint16(rng.IntN(1024))
	}
	dst := make([]float32, len(src))
	b.Run("fast", func(b *testing.B) {
		b.SetBytes(int64(2 * len(src)))
		for b.Loop() {
			F16ToF32(dst, src)
		}
	})
	b.Run("ref", func(b *testing.B) {
		b.SetBytes(int64(2 * len(src)))
		for b.Loop() {
			for i, h := range src {
				dst[i] = f16ToF32Ref(h)
			}
		}
	})
}

func BenchmarkSnapKV(b *testing.B) {
	// 12 layers x 12 heads, a window of 32 over 4096 positions, keeping 1024.
	rng := rand.New(rand.NewPCG(31, 32))
	layers := randomLayers(rng, 12, 12, 32, benchPositions)
	for _, agg := range []Aggregation{AggNormSum, AggVotes} {
		cfg := SnapKVConfig{Window: 32, Budget: 1024, Kernel: 7, Pool: PoolAvg, Agg: agg}
		b.Run(agg.String()+"/fast", func(b *testing.B) {
			for b.Loop() {
				if _, err := SnapKV(cfg, layers, 4); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(agg.String()+"/ref", func(b *testing.B) {
			for b.Loop() {
				snapKVRef(cfg, layers, 4)
			}
		})
	}
}

// BenchmarkAttentionFromQK: the window attention of one layer computed from
// queries and keys (the flash-attention path), at the retrieval model's
// shape (4 heads of 32 over 2 KV heads) and a 1333-token prompt.
func BenchmarkAttentionFromQK(b *testing.B) {
	const heads, kvHeads, rows, cols, dim = 4, 2, 32, 1333, 32
	rng := rand.New(rand.NewPCG(1, 2))
	q := randomNormal(rng, heads*rows*dim)
	k := randomNormal(rng, kvHeads*cols*dim)
	b.ResetTimer()
	for b.Loop() {
		AttentionFromQK(q, heads, rows, k, kvHeads, cols, dim)
	}
}
