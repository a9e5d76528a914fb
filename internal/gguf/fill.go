package gguf

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
)

// weightStd is the standard deviation of the random weights.
const weightStd = 0.02

// chunkLen is how many values are generated and encoded as one piece: a
// multiple of every block size, so pieces encode independently.
const chunkLen = 1 << 18

// chunk is one piece of one tensor's data to generate, and where its
// encoded bytes go.
type chunk struct {
	t      *llamaTensor
	tensor int // index of t in the file
	index  int // index of the piece in t
	n      int // values in it
	out    chan<- chunkResult
}

type chunkResult struct {
	data []byte
	err  error
}

// writeRandomData generates the tensors' data with workers goroutines
// (0: GOMAXPROCS) and writes it to w in order. Each piece has its own
// random stream, seeded from seed and the piece's place in the file, so
// the output does not depend on the number of workers. At most a few
// pieces per worker are in memory at once.
func writeRandomData(w *Writer, ts []llamaTensor, seed uint64, workers int) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	done := make(chan struct{})
	jobs := make(chan chunk)
	order := make(chan chan chunkResult, 2*workers) // results, in file order
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(done)

	go func() {
		defer close(jobs)
		defer close(order)
		for ti := range ts {
			t := &ts[ti]
			total := t.Elements()
			for ci := 0; int64(ci)*chunkLen < total; ci++ {
				out := make(chan chunkResult, 1)
				c := chunk{t: t, tensor: ti, index: ci, n: int(min(chunkLen, total-int64(ci)*chunkLen)), out: out}
				select {
				case order <- out:
				case <-done:
					return
				}
				select {
				case jobs <- c:
				case <-done:
					return
				}
			}
		}
	}()
	for range workers {
		wg.Go(func() {
			vals := make([]float32, chunkLen)
			for c := range jobs {
				c.out <- c.generate(vals[:c.n], seed)
			}
		})
	}
	for out := range order {
		r := <-out
		if r.err != nil {
			return r.err
		}
		if err := w.WriteData(r.data); err != nil {
			return err
		}
	}
	return nil
}

// generate fills vals with the piece's values and encodes them.
func (c chunk) generate(vals []float32, seed uint64) chunkResult {
	if c.t.constant {
		for i := range vals {
			vals[i] = c.t.value
		}
	} else {
		r := rand.New(rand.NewPCG(seed, mix(uint64(c.tensor)<<32|uint64(c.index))))
		for i := range vals {
			vals[i] = float32(r.NormFloat64() * weightStd)
		}
	}
	data, err := c.t.Type.Encode(make([]byte, 0, c.t.Type.Bytes(int64(len(vals)))), vals)
	if err != nil {
		return chunkResult{err: fmt.Errorf("generate tensor %s: %w", c.t.Name, err)}
	}
	return chunkResult{data: data}
}

// mix scrambles x (splitmix64's finaliser), so that neighbouring pieces
// get unrelated random streams.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
