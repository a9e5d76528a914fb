package policies

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/viterin/vek/vek32"
)

// Votes sums each head's rows: SnapKV's votes, one row per head.
func (a WindowAttention) Votes() WindowAttention {
	v := WindowAttention{Heads: a.Heads, Rows: 1, Cols: a.Cols, Data: make([]float32, a.Heads*a.Cols)}
	for h := range a.Heads {
		a.SumColumns(v.Data[h*a.Cols:][:a.Cols], h, 1)
	}
	return v
}

// FirstCols keeps the first n columns of every row (a copy): the votes of
// rows that ran past the prompt (lookahead tokens), over the prompt alone.
func (a WindowAttention) FirstCols(n int) WindowAttention {
	if n >= a.Cols {
		return a
	}
	out := WindowAttention{Heads: a.Heads, Rows: a.Rows, Cols: n, Data: make([]float32, a.Heads*a.Rows*n)}
	for hr := range a.Heads * a.Rows {
		copy(out.Data[hr*n:][:n], a.Data[hr*a.Cols:][:n])
	}
	return out
}

// WindowAttention is one layer's attention of the observation window over
// the prompt: Data[(h*Rows+r)*Cols + c] for query head h, window row r and
// prompt position c (0..Cols-1). The rows are the last Rows prompt
// positions, so row r is position Cols-Rows+r; entries of positions after a
// row's own are 0. With Rows == Cols it is a whole causal prompt attention.
type WindowAttention struct {
	Heads, Rows, Cols int
	Data              []float32
}

// Validate checks that the sizes are consistent.
func (a WindowAttention) Validate() error {
	switch {
	case a.Heads < 1 || a.Rows < 0 || a.Cols < 0:
		return fmt.Errorf("attention shape %dx%dx%d is not valid", a.Heads, a.Rows, a.Cols)
	case a.Rows > a.Cols:
		return fmt.Errorf("attention has %d window rows but only %d positions", a.Rows, a.Cols)
	case len(a.Data) != a.Heads*a.Rows*a.Cols:
		return fmt.Errorf("attention %dx%dx%d needs %d values, has %d", a.Heads, a.Rows, a.Cols, a.Heads*a.Rows*a.Cols, len(a.Data))
	}
	return nil
}

// Head returns head h's Rows x Cols block of Data (not a copy).
func (a WindowAttention) Head(h int) []float32 {
	size := a.Rows * a.Cols
	return a.Data[h*size : (h+1)*size]
}

// SumColumns writes into dst, for each position c < len(dst) (at most
// Cols), the sum of the attention to c over every row of the query heads
// firstHead .. firstHead+count-1. One head gives SnapKV's vote (with
// len(dst) = Cols-Rows) and H2O's accumulated score; a group of query heads
// gives ext_kv_head's vote; all heads give ext_all_heads'. The sums are
// float32; rows are added four at a time (pairwise, then into dst), so dst
// is read and written once per four rows.
func (a WindowAttention) SumColumns(dst []float32, firstHead, count int) {
	if len(dst) > a.Cols || firstHead < 0 || count < 0 || firstHead+count > a.Heads {
		panic(fmt.Sprintf("policies.SumColumns: %d columns of heads [%d, %d) of a %dx%dx%d attention",
			len(dst), firstHead, firstHead+count, a.Heads, a.Rows, a.Cols))
	}
	clear(dst)
	rows := a.Data[firstHead*a.Rows*a.Cols : (firstHead+count)*a.Rows*a.Cols]
	n, stride := len(dst), a.Cols
	r := 0
	for ; r+4 <= count*a.Rows; r += 4 {
		r0 := rows[r*stride:][:n]
		r1 := rows[(r+1)*stride:][:n]
		r2 := rows[(r+2)*stride:][:n]
		r3 := rows[(r+3)*stride:][:n]
		for j := range dst {
			dst[j] += (r0[j] + r1[j]) + (r2[j] + r3[j])
		}
	}
	for ; r < count*a.Rows; r++ {
		addFloat32(dst, rows[r*stride:])
	}
}

// ColumnSums returns SumColumns over all Cols positions in a new slice.
func (a WindowAttention) ColumnSums(firstHead, count int) []float32 {
	sums := make([]float32, a.Cols)
	a.SumColumns(sums, firstHead, count)
	return sums
}

// AttentionFromQK computes the scaled, causally masked softmax attention of
// the window's queries over all keys (golden FORMAT "qk" input):
// q is [heads][rows][dim] and k [kvHeads][cols][dim], both flattened; query
// head h uses KV head h / (heads/kvHeads). Row r is position cols-rows+r and
// sees positions 0 .. cols-rows+r: softmax(q·k / sqrt(dim)) over those, 0
// after them. It panics if the sizes are inconsistent.
func AttentionFromQK(q []float32, heads, rows int, k []float32, kvHeads, cols, dim int) WindowAttention {
	checkQK("AttentionFromQK", q, heads, rows, 0, k, kvHeads, cols, dim)
	att := WindowAttention{Heads: heads, Rows: rows, Cols: cols, Data: make([]float32, heads*rows*cols)}
	group := heads / kvHeads
	rowsG := group * rows
	kT := make([]float32, qkScratch(rowsG, cols, dim))
	for g := range kvHeads {
		keys := k[g*cols*dim:][:cols*dim]
		groupScores(att.Data[g*rowsG*cols:][:rowsG*cols], q[g*rowsG*dim:][:rowsG*dim], func(c int) []float32 { return keys[c*dim:][:dim] }, kT, rows, cols, dim)
	}
	return att
}

// VotesFromQK is AttentionFromQK summed over each head's rows: SnapKV's
// votes, one row per head ([head][cols]).
func VotesFromQK(q []float32, heads, rows int, k []float32, kvHeads, cols, dim int) WindowAttention {
	checkQK("VotesFromQK", q, heads, rows, 1, k, kvHeads, cols, dim)
	rowLen := kvHeads * dim
	v, _ := VotesFromKeys(q, heads, rows, cols, kvHeads, dim, func(dst []float32, c0, count int) error {
		for c := range count {
			for g := range kvHeads {
				copy(dst[c*rowLen+g*dim:][:dim], k[(g*cols+c0+c)*dim:][:dim])
			}
		}
		return nil
	})
	return v
}

// KeyLoader fills dst with the keys of columns c0 .. c0+count-1, one row
// of kvHeads*dim values per column (KV head g's key at g*dim), as a K
// cache holds them: it reads them from wherever they are, a block at a
// time, so that no copy of every key is ever needed.
type KeyLoader func(dst []float32, c0, count int) error

// VotesFromKeys is VotesFromQK over keys that load reads a block of
// qkBlock columns at a time: each block is read once, for every KV group,
// so that a cache in device memory is read once and a host one is never
// copied whole. Only the scores of the rows ([heads][rows][cols]) are held.
// It returns load's error; it panics if the sizes are inconsistent.
func VotesFromKeys(q []float32, heads, rows, cols, kvHeads, dim int, load KeyLoader) (WindowAttention, error) {
	if heads < 1 || kvHeads < 1 || dim < 1 || rows < 1 || rows > cols || heads%kvHeads != 0 || len(q) != heads*rows*dim {
		panic(fmt.Sprintf("policies.VotesFromKeys: q has %d values for %dx%dx%d over %d columns and %d KV heads", len(q), heads, rows, dim, cols, kvHeads))
	}
	group := heads / kvHeads
	rowsG, rowLen := group*rows, kvHeads*dim
	block := min(cols, qkBlock)
	keys := make([]float32, block*rowLen)
	kT, out := make([]float32, dim*block), make([]float32, rowsG*block)
	scores := make([]float32, heads*rows*cols) // [head][row][col]
	for c0 := 0; c0 < cols; c0 += block {
		bc := min(block, cols-c0)
		if err := load(keys[:bc*rowLen], c0, bc); err != nil {
			return WindowAttention{}, err
		}
		for g := range kvHeads {
			for c := range bc {
				for d, v := range keys[c*rowLen+g*dim:][:dim] {
					kT[d*bc+c] = v
				}
			}
			vek32.MatMul_Into(out[:rowsG*bc], q[g*rowsG*dim:][:rowsG*dim], kT[:dim*bc], dim)
			sg := scores[g*rowsG*cols:]
			for i := range rowsG {
				copy(sg[i*cols+c0:][:bc], out[i*bc:][:bc])
			}
		}
	}
	scale := float32(1 / math.Sqrt(float64(dim)))
	votes := WindowAttention{Heads: heads, Rows: 1, Cols: cols, Data: make([]float32, heads*cols)}
	// The exponentials cost more than the product: spread the heads'
	// masked softmax over the CPUs, each head's rows summed into its votes.
	parallel(heads, heads*rows*cols, func(h0, h1 int) {
		for h := h0; h < h1; h++ {
			dst := votes.Data[h*cols:][:cols]
			for r := range rows {
				row := scores[(h*rows+r)*cols:][:cols]
				visible := cols - rows + r + 1
				vek32.MulNumber_Inplace(row[:visible], scale)
				Softmax(row[:visible])
				vek32.Add_Inplace(dst[:visible], row[:visible])
			}
		}
	})
	return votes, nil
}

// checkQK panics, naming fn, unless q and k hold [heads][rows][dim] and
// [kvHeads][cols][dim] values with minRows <= rows <= cols and whole KV
// groups.
func checkQK(fn string, q []float32, heads, rows, minRows int, k []float32, kvHeads, cols, dim int) {
	if heads < 1 || kvHeads < 1 || dim < 1 || rows < minRows || rows > cols || heads%kvHeads != 0 ||
		len(q) != heads*rows*dim || len(k) != kvHeads*cols*dim {
		panic(fmt.Sprintf("policies.%s: q has %d values for %dx%dx%d, k %d for %dx%dx%d",
			fn, len(q), heads, rows, dim, len(k), kvHeads, cols, dim))
	}
}

// qkBlock is the number of key columns groupScores multiplies at a time:
// their transposed block (dim x qkBlock) stays in cache while every query
// row of the group passes over it, where the whole transposed key matrix
// (a megabyte at 4000 positions of dimension 64) would be read from memory
// once per row.
const qkBlock = 256

// qkScratch is the scratch groupScores needs for a group of rowsG query
// rows over cols keys of dimension dim.
func qkScratch(rowsG, cols, dim int) int {
	return (dim + rowsG) * min(cols, qkBlock)
}

// groupScores fills dst ([group*rows][cols]) with the scaled, causally
// masked softmax attention of one KV group's query rows qg (its heads'
// rows, head after head) over the keys of columns 0..cols-1 (key(c) is
// column c's). Row r of each head is position cols-rows+r and sees columns
// up to it. kT is scratch of qkScratch values.
func groupScores(dst, qg []float32, key func(c int) []float32, kT []float32, rows, cols, dim int) {
	scale := float32(1 / math.Sqrt(float64(dim)))
	n := len(qg) / dim
	if n < 8 {
		// A decode step: a row or two. Dot products straight from the key
		// rows cost less than transposing them for a matrix product.
		for i := range n {
			qr := qg[i*dim:][:dim]
			row := dst[i*cols:][:cols]
			visible := cols - rows + i%rows + 1
			for c := range visible {
				row[c] = Dot(qr, key(c)) * scale
			}
			Softmax(row[:visible])
			clear(row[visible:])
		}
		return
	}
	// All the group's rows against its keys are one matrix product,
	// [group*rows][dim] x [dim][cols], done with vek's AVX2 kernel one
	// block of columns at a time.
	block := min(cols, qkBlock)
	kTb, out := kT[:dim*block], kT[dim*block:][:n*block]
	for c0 := 0; c0 < cols; c0 += block {
		bc := min(block, cols-c0)
		for c := range bc {
			for d, v := range key(c0 + c) {
				kTb[d*bc+c] = v
			}
		}
		vek32.MatMul_Into(out[:n*bc], qg, kTb[:dim*bc], dim)
		for i := range n {
			copy(dst[i*cols+c0:][:bc], out[i*bc:][:bc])
		}
	}
	// The exponentials cost more than the product: spread the rows'
	// masked softmax over the CPUs.
	parallel(n, n*cols, func(i0, i1 int) {
		for i := i0; i < i1; i++ {
			row := dst[i*cols:][:cols]
			visible := cols - rows + i%rows + 1
			vek32.MulNumber_Inplace(row[:visible], scale)
			Softmax(row[:visible])
			clear(row[visible:])
		}
	})
}

// parallel runs f over [0, n) split into one contiguous part per CPU, or
// in one call when the work (in elements) is too small to pay for waking
// goroutines: a decode step's single row is.
func parallel(n, work int, f func(i0, i1 int)) {
	const minWork = 1 << 16
	parts := min(n, runtime.GOMAXPROCS(0))
	if parts <= 1 || work < minWork {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	for p := range parts {
		wg.Go(func() { f(p*n/parts, (p+1)*n/parts) })
	}
	wg.Wait()
}

// Selection is SnapKV's per-head result for one row of scores: one query
// head (the paper's reference), one KV group, or a whole layer.
type Selection struct {
	// Vote is the window's summed attention to each position before the
	// window, [0, Cols-Window).
	Vote []float32
	// Pooled is Vote after Pool1D.
	Pooled []float32
	// Selected are the top Budget-Window positions of Pooled, ascending.
	Selected []int
	// Kept is Selected followed by the window positions.
	Kept []int
}

// SelectLayer runs SnapKV's per-head steps on one layer, summing the votes
// of groupSize consecutive query heads before pooling: groupSize 1 is the
// paper's per-query-head selection, Heads/nKVHeads one selection per KV head
// (golden ext_kv_head), Heads one selection for the layer (ext_all_heads).
// It returns Heads/groupSize selections. If Budget > Cols nothing is
// compressed: each selection has only Kept, every position.
func (c SnapKVConfig) SelectLayer(att WindowAttention, groupSize int) ([]Selection, error) {
	if err := c.Validate(att.Cols); err != nil {
		return nil, err
	}
	if err := c.checkLayer(att); err != nil {
		return nil, fmt.Errorf("snapkv: %w", err)
	}
	if groupSize < 1 || att.Heads%groupSize != 0 {
		return nil, fmt.Errorf("snapkv: %d query heads do not split into groups of %d", att.Heads, groupSize)
	}
	sels := make([]Selection, att.Heads/groupSize)
	if c.Budget > att.Cols {
		for g := range sels {
			sels[g].Kept = positions(0, att.Cols)
		}
		return sels, nil
	}
	n := att.Cols - c.Window
	for g := range sels {
		s := &sels[g]
		s.Vote = make([]float32, n)
		att.SumColumns(s.Vote, g*groupSize, groupSize)
		s.Pooled = make([]float32, n)
		Pool1D(s.Pooled, s.Vote, c.Kernel, c.Pool)
		s.Selected = TopK(s.Pooled, c.Budget-c.Window)
		s.Kept = withWindow(s.Selected, att.Cols, c.Window)
	}
	return sels, nil
}
