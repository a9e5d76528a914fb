package hooks

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/policies"
)

// Source is where the observer gets attention from.
type Source int

const (
	// FromSoftmax reads kq_soft_max-<il> (flash attention off): the scores
	// llama.cpp computed, over cells.
	FromSoftmax Source = iota
	// FromQK reads the post-RoPE queries Qcur-<il> and the keys in
	// cache_k_l<il> (flash attention on, where no score tensor exists), and
	// computes the scores in Go.
	FromQK
)

func (s Source) String() string {
	if s == FromQK {
		return "qk"
	}
	return "softmax"
}

// Shape is what the observer needs to know of the model.
type Shape struct {
	Layers, Heads, KVHeads, HeadDim int
}

// Observer is the cb_eval observer of one context. When MapCells is set it
// reads, on every decode, which cells the batch's tokens were written to
// (attn_inp_k_idxs, one small tensor). When armed with Arm it also reads the
// tensors the window's attention needs, on that one decode only. Everything
// else llama.cpp asks about is declined at once, so no other node splits the
// graph.
type Observer struct {
	shape  Shape
	source Source
	// MapCells asks for the written cells on every decode.
	MapCells bool
	// AlsoQK makes a softmax observer read the queries too, so that both
	// sources can be compared on one decode (AttentionFrom).
	AlsoQK bool

	armed bool
	cells []int64 // cells the last decode wrote, in batch order
	// Per layer, from the armed decode.
	softmax [][]float32 // kq_soft_max: [head][row][nKV]
	nKV     int
	rows    int
	q       [][]float32       // Qcur: [row][head][dim]
	kCache  []bindings.Tensor // cache_k_l<il>, kept for the context's life
	seen    []bool
	err     error
}

// NewObserver makes an observer for a model of shape s reading from src.
func NewObserver(s Shape, src Source) *Observer {
	return &Observer{
		shape: s, source: src, MapCells: true,
		softmax: make([][]float32, s.Layers), q: make([][]float32, s.Layers),
		kCache: make([]bindings.Tensor, s.Layers), seen: make([]bool, s.Layers),
	}
}

// Source is where this observer reads attention from.
func (o *Observer) Source() Source { return o.source }

// Arm makes the next decode read the window's attention; Disarm stops it.
func (o *Observer) Arm() {
	o.armed, o.err = true, nil
	clear(o.seen)
}

// Disarm stops reading attention.
func (o *Observer) Disarm() { o.armed = false }

// TakeCells returns the cells the last decode wrote, in batch order, and
// forgets them.
func (o *Observer) TakeCells() []int64 {
	c := o.cells
	o.cells = nil
	return c
}

// layerOf parses "<prefix><il>" and returns il, or -1.
func layerOf(name, prefix string) int {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return -1
	}
	il, err := strconv.Atoi(rest)
	if err != nil {
		return -1
	}
	return il
}

// Ask implements bindings.EvalObserver.
func (o *Observer) Ask(t bindings.Tensor) bool {
	name := t.Name()
	switch {
	case strings.HasPrefix(name, "cache_k_l") && strings.HasSuffix(name, " (view)"):
		// The SET_ROWS node that writes this batch's keys: src[1] holds the
		// cells, src[2] is the layer's K cache.
		k, ok := t.Src(2)
		if !ok {
			return false
		}
		il := layerOf(k.Name(), "cache_k_l")
		if il < 0 || il >= o.shape.Layers {
			return false
		}
		o.kCache[il] = k
		return il == 0 && o.MapCells
	case !o.armed:
		return false
	case o.source == FromSoftmax && layerOf(name, "kq_soft_max-") >= 0:
		return true
	case o.source == FromQK || o.AlsoQK:
		return layerOf(name, "Qcur-") >= 0 && t.OpName() == "ROPE"
	}
	return false
}

// Observe implements bindings.EvalObserver.
func (o *Observer) Observe(t bindings.Tensor) bool {
	if err := o.observe(t); err != nil && o.err == nil {
		o.err = err
	}
	return true
}

func (o *Observer) observe(t bindings.Tensor) error {
	name := t.Name()
	ne := t.Ne()
	if strings.HasPrefix(name, "cache_k_l") {
		idx, ok := t.Src(1)
		if !ok {
			return fmt.Errorf("%s: no cell indices", name)
		}
		// One decode runs one graph per ubatch: append.
		cells := make([]int64, idx.Ne()[0])
		switch idx.TypeName() {
		case "i64":
			if err := bindings.ReadTensor(idx, cells, 0); err != nil {
				return err
			}
			o.cells = append(o.cells, cells...)
			return nil
		case "i32":
			c32 := make([]int32, len(cells))
			if err := bindings.ReadTensor(idx, c32, 0); err != nil {
				return err
			}
			for i, c := range c32 {
				cells[i] = int64(c)
			}
			o.cells = append(o.cells, cells...)
			return nil
		}
		return fmt.Errorf("%s: cell indices of type %s", name, idx.TypeName())
	}
	if il := layerOf(name, "kq_soft_max-"); il >= 0 && il < o.shape.Layers && o.source == FromSoftmax {
		// [n_kv, n_tokens, n_head], F32.
		o.nKV, o.rows = int(ne[0]), int(ne[1])
		n := int(ne[0] * ne[1] * ne[2])
		if cap(o.softmax[il]) < n {
			o.softmax[il] = make([]float32, n)
		}
		o.softmax[il] = o.softmax[il][:n]
		o.seen[il] = true
		return bindings.ReadTensor(t, o.softmax[il], 0)
	}
	if il := layerOf(name, "Qcur-"); il >= 0 && il < o.shape.Layers {
		// [head_dim, n_head, n_tokens], F32.
		o.rows = int(ne[2])
		n := int(ne[0] * ne[1] * ne[2])
		if cap(o.q[il]) < n {
			o.q[il] = make([]float32, n)
		}
		o.q[il] = o.q[il][:n]
		if o.source == FromQK {
			o.seen[il] = true
		}
		return bindings.ReadTensor(t, o.q[il], 0)
	}
	return nil
}

// Attention returns, for every layer, the armed decode's attention of its
// rows (the window: the last rows of positions) over the prompt positions
// [0, n), with columns in position order, using cells to find each
// position's cell.
func (o *Observer) Attention(cells *CellMap, n int) ([]policies.WindowAttention, error) {
	return o.AttentionFrom(o.source, cells, n)
}

// AttentionFrom is Attention computed from src, which must be the
// observer's own source, or FromQK for a softmax observer with AlsoQK.
func (o *Observer) AttentionFrom(src Source, cells *CellMap, n int) ([]policies.WindowAttention, error) {
	if src != o.source && !(src == FromQK && o.AlsoQK) {
		return nil, fmt.Errorf("observe attention: this observer did not read %s inputs", src)
	}
	if o.err != nil {
		return nil, fmt.Errorf("observe attention: %w", o.err)
	}
	for il, ok := range o.seen {
		if !ok {
			return nil, fmt.Errorf("observe attention: layer %d was not seen (is flash attention %s as the observer expects?)", il, map[Source]string{FromSoftmax: "off", FromQK: "on"}[o.source])
		}
	}
	colCell := make([]int, n)
	for p := range n {
		c, ok := cells.Cell(int32(p))
		if !ok {
			return nil, fmt.Errorf("observe attention: position %d has no cell", p)
		}
		colCell[p] = int(c)
	}
	if src == FromSoftmax {
		return o.fromSoftmax(colCell)
	}
	return o.fromQK(colCell)
}

func (o *Observer) fromSoftmax(colCell []int) ([]policies.WindowAttention, error) {
	s, n := o.shape, len(colCell)
	out := make([]policies.WindowAttention, s.Layers)
	for il := range out {
		w := policies.WindowAttention{Heads: s.Heads, Rows: o.rows, Cols: n, Data: make([]float32, s.Heads*o.rows*n)}
		src := o.softmax[il]
		for h := range s.Heads {
			for r := range o.rows {
				row := src[(h*o.rows+r)*o.nKV:][:o.nKV]
				dst := w.Data[(h*o.rows+r)*n:][:n]
				for p, c := range colCell {
					if c >= o.nKV {
						return nil, fmt.Errorf("observe attention: cell %d beyond n_kv %d", c, o.nKV)
					}
					dst[p] = row[c]
				}
			}
		}
		out[il] = w
	}
	return out, nil
}

func (o *Observer) fromQK(colCell []int) ([]policies.WindowAttention, error) {
	s, n := o.shape, len(colCell)
	lo, hi := colCell[0], colCell[0]
	for _, c := range colCell {
		lo, hi = min(lo, c), max(hi, c)
	}
	rowLen := s.KVHeads * s.HeadDim
	out := make([]policies.WindowAttention, s.Layers)
	q := make([]float32, s.Heads*o.rows*s.HeadDim)
	k := make([]float32, s.KVHeads*n*s.HeadDim)
	cacheRows := make([]float32, (hi-lo+1)*rowLen)
	for il := range out {
		if err := readKeys(o.kCache[il], lo, hi-lo+1, rowLen, cacheRows); err != nil {
			return nil, fmt.Errorf("observe attention: layer %d: %w", il, err)
		}
		// Qcur is [row][head][dim]; AttentionFromQK wants [head][row][dim].
		for r := range o.rows {
			for h := range s.Heads {
				copy(q[(h*o.rows+r)*s.HeadDim:][:s.HeadDim], o.q[il][(r*s.Heads+h)*s.HeadDim:][:s.HeadDim])
			}
		}
		// A cache row is [kv_head][dim]; k wants [kv_head][position][dim].
		for p, c := range colCell {
			row := cacheRows[(c-lo)*rowLen:][:rowLen]
			for kh := range s.KVHeads {
				copy(k[(kh*n+p)*s.HeadDim:][:s.HeadDim], row[kh*s.HeadDim:][:s.HeadDim])
			}
		}
		out[il] = policies.AttentionFromQK(q, s.Heads, o.rows, k, s.KVHeads, n, s.HeadDim)
	}
	return out, nil
}

// readKeys reads count rows of the K cache starting at cell first into dst
// as float32, converting F16. Only that range is copied, not the cache.
func readKeys(k bindings.Tensor, first, count, rowLen int, dst []float32) error {
	if k == (bindings.Tensor{}) {
		return fmt.Errorf("K cache tensor not seen")
	}
	ne, nb := k.Ne(), k.Nb()
	if int(ne[0]) != rowLen {
		return fmt.Errorf("K cache rows hold %d values, want %d", ne[0], rowLen)
	}
	off := uint64(first) * nb[1]
	elem := map[string]uint64{"f32": 4, "f16": 2}[k.TypeName()]
	if elem != 0 && nb[1] != uint64(rowLen)*elem {
		return fmt.Errorf("K cache rows are not contiguous (stride %d)", nb[1])
	}
	switch k.TypeName() {
	case "f32":
		return bindings.ReadTensor(k, dst[:count*rowLen], off)
	case "f16":
		raw := make([]uint16, count*rowLen)
		if err := bindings.ReadTensor(k, raw, off); err != nil {
			return err
		}
		policies.F16ToF32(dst[:count*rowLen], raw)
		return nil
	}
	return fmt.Errorf("K cache type %s: kvtrim reads f16 and f32 caches", k.TypeName())
}
