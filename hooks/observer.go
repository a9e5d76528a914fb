package hooks

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

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

	armed  bool
	window int
	// written is the cells the decodes wrote since TakeCells, in batch
	// order; cellMap the sequence's position -> cell map they build
	// (Record), which evictions and compactions keep in step.
	written []int64
	cellMap *CellMap
	// soft[il] and q[il] hold, per layer, the last `window` rows of
	// kq_soft_max and of Qcur seen while armed, oldest first, across
	// ubatches and decode calls.
	soft, q [][]windowRow
	// kCache[il] is cache_k_l<il>, kept for the context's life: the keys
	// are read from it, a block of rows at a time, whenever they are
	// needed (never copied whole, so that observing costs no memory in
	// proportion to the prompt).
	kCache []bindings.Tensor
	// qBuf and stepBuf are scratch: the window's query rows of each layer
	// (layers may run at once, so each has its own), and StepScores'
	// scores.
	qBuf    [][]float32
	stepBuf []float32
	// colCell is attention's buffer of the columns' cells.
	colCell []int
	err     error
}

// windowRow is one query row: its softmax scores over the cells [0, nKV) of
// every head ([head][nKV]), or its post-RoPE query ([head][dim]).
type windowRow struct {
	nKV  int
	data []float32
}

// checkHeads says whether a kq_soft_max row of layer il holds heads rows.
func (r windowRow) checkHeads(il, heads int) error {
	if len(r.data) != heads*r.nKV {
		return fmt.Errorf("layer %d: kq_soft_max has %d heads, the model %d", il, len(r.data)/max(r.nKV, 1), heads)
	}
	return nil
}

// addHeadTo adds head h's scores of the cells in colCell to dst, one per
// cell; a cell past the row's n_kv was not there yet, and adds 0.
func (r windowRow) addHeadTo(dst []float32, h int, colCell []int) {
	src := r.data[h*r.nKV:][:r.nKV]
	for p, c := range colCell {
		if c < r.nKV {
			dst[p] += src[c]
		}
	}
}

// NewObserver makes an observer for a model of shape s reading from src.
func NewObserver(s Shape, src Source) *Observer {
	return &Observer{
		shape: s, source: src, MapCells: true, cellMap: NewCellMap(),
		soft: make([][]windowRow, s.Layers), q: make([][]windowRow, s.Layers), kCache: make([]bindings.Tensor, s.Layers),
		qBuf: make([][]float32, s.Layers),
	}
}

// Shape is the model's shape the observer was made for.
func (o *Observer) Shape() Shape { return o.shape }

// Source is where this observer reads attention from.
func (o *Observer) Source() Source { return o.source }

// Arm makes the following decodes keep the last window query rows of
// every layer, until Disarm: the observation window may then ride in the
// prompt's last batch rather than be decoded on its own (which llama.cpp's
// CPU flash attention makes slow). Only the last rows of each ubatch are
// read.
func (o *Observer) Arm(window int) {
	o.armed, o.err, o.window = true, nil, window
	for il := range o.soft {
		o.soft[il], o.q[il] = o.soft[il][:0], o.q[il][:0]
	}
}

// Disarm stops reading attention.
func (o *Observer) Disarm() { o.armed = false }

// Armed reports whether the observer reads attention (Arm).
func (o *Observer) Armed() bool { return o.armed }

// Cells is the map of the observed sequence's positions to cells, which
// Record builds; evict through a Sequence holding it, so that it stays in
// step.
func (o *Observer) Cells() *CellMap { return o.cellMap }

// SetCells replaces the map, after the sequence's cells were moved
// (Put returns the packed map).
func (o *Observer) SetCells(m *CellMap) { o.cellMap = m }

// Record adds the cells the last decode wrote, for the batch's positions,
// to the map.
func (o *Observer) Record(positions []int32) error {
	return recordCells(o.cellMap, positions, o.TakeCells())
}

// TakeCells returns the cells the last decode wrote, in batch order, and
// forgets them.
func (o *Observer) TakeCells() []int64 {
	c := o.written
	o.written = nil
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
	case isKWrite(name):
		il := o.noteKCache(t)
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

// isKWrite says whether a node is the SET_ROWS that writes a batch's keys
// into a layer's K cache: src[1] holds the cells, src[2] is the cache.
func isKWrite(name string) bool {
	return strings.HasPrefix(name, "cache_k_l") && strings.HasSuffix(name, " (view)")
}

// kCacheOf is the persistent K cache tensor a key-writing node writes, and
// its layer (-1 when it is not one). A cache of several streams (one per
// sequence) is written through a transient 2-D reshape of its 3-D tensor,
// whose rows then number the streams' cells one after another: the cell
// indices the node writes are stream x cells + cell, and index the 3-D
// tensor's rows alike.
func kCacheOf(t bindings.Tensor) (bindings.Tensor, int) {
	k, ok := t.Src(2)
	if !ok {
		return k, -1
	}
	for {
		base, ok := k.ViewSrc()
		if !ok {
			break
		}
		k = base
	}
	return k, layerOf(k.Name(), "cache_k_l")
}

// noteKCache keeps the K cache a key-writing node writes and returns its
// layer, or -1.
func (o *Observer) noteKCache(t bindings.Tensor) int {
	k, il := kCacheOf(t)
	if !o.setKCache(il, k) {
		return -1
	}
	return il
}

// setKCache keeps k as layer il's K cache, and reports whether the model
// has that layer.
func (o *Observer) setKCache(il int, k bindings.Tensor) bool {
	if il < 0 || il >= o.shape.Layers {
		return false
	}
	o.kCache[il] = k
	return true
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
		// One decode runs one graph per ubatch: append.
		cells, err := writtenCells(t)
		o.written = append(o.written, cells...)
		return err
	}
	if il := layerOf(name, "kq_soft_max-"); il >= 0 && il < o.shape.Layers && o.source == FromSoftmax {
		// [n_kv, n_tokens, n_head], F32: per head, the last m rows are one
		// contiguous range.
		nKV, nTok, nHead := int(ne[0]), int(ne[1]), int(ne[2])
		m := min(nTok, o.window)
		block := make([]float32, m*nKV)
		rows := make([]windowRow, m)
		for r := range rows {
			rows[r] = windowRow{nKV: nKV, data: make([]float32, nHead*nKV)}
		}
		for h := range nHead {
			off := uint64((h*nTok+nTok-m)*nKV) * 4
			if err := bindings.ReadTensor(t, block, off); err != nil {
				return err
			}
			for r := range rows {
				copy(rows[r].data[h*nKV:][:nKV], block[r*nKV:][:nKV])
			}
		}
		o.soft[il] = o.keep(o.soft[il], rows)
		return nil
	}
	if il := layerOf(name, "Qcur-"); il >= 0 && il < o.shape.Layers {
		// [head_dim, n_head, n_tokens], F32: the last m rows are contiguous.
		rowLen, nTok := int(ne[0]*ne[1]), int(ne[2])
		m := min(nTok, o.window)
		block := make([]float32, m*rowLen)
		if err := bindings.ReadTensor(t, block, uint64((nTok-m)*rowLen)*4); err != nil {
			return err
		}
		rows := make([]windowRow, m)
		for r := range rows {
			rows[r] = windowRow{data: block[r*rowLen:][:rowLen]}
		}
		o.q[il] = o.keep(o.q[il], rows)
	}
	return nil
}

// writtenCells reads the cell indices a key-writing node writes, in batch
// order.
func writtenCells(t bindings.Tensor) ([]int64, error) {
	idx, ok := t.Src(1)
	if !ok {
		return nil, fmt.Errorf("%s: no cell indices", t.Name())
	}
	cells := make([]int64, idx.Ne()[0])
	switch idx.TypeName() {
	case "i64":
		if err := bindings.ReadTensor(idx, cells, 0); err != nil {
			return nil, err
		}
		return cells, nil
	case "i32":
		c32 := make([]int32, len(cells))
		if err := bindings.ReadTensor(idx, c32, 0); err != nil {
			return nil, err
		}
		for i, c := range c32 {
			cells[i] = int64(c)
		}
		return cells, nil
	}
	return nil, fmt.Errorf("%s: cell indices of type %s", t.Name(), idx.TypeName())
}

// keep appends rows to a layer's window, dropping the oldest beyond it.
func (o *Observer) keep(have, rows []windowRow) []windowRow {
	all := append(have, rows...)
	return all[max(0, len(all)-o.window):]
}

// Attention returns, for every layer, the armed decode's attention of its
// rows (the window: the last rows of positions) over the prompt positions
// [0, n), with columns in position order, using the cell map to find each
// position's cell.
func (o *Observer) Attention(n int) ([]policies.WindowAttention, error) {
	return o.AttentionFrom(o.source, n)
}

// AttentionFrom is Attention computed from src, which must be the
// observer's own source, or FromQK for a softmax observer with AlsoQK.
func (o *Observer) AttentionFrom(src Source, n int) ([]policies.WindowAttention, error) {
	return o.attention(src, positionsUpTo[int32](n), false)
}

// Votes is Attention summed over each head's window rows (one row per head,
// WindowAttention.Votes): what SnapKV and H2O use, in a window's fraction of
// the memory.
func (o *Observer) Votes(n int) ([]policies.WindowAttention, error) {
	return o.attention(o.source, positionsUpTo[int32](n), true)
}

// VotesOver is AttentionOver summed over each head's rows.
func (o *Observer) VotesOver(positions []int32) ([]policies.WindowAttention, error) {
	return o.attention(o.source, positions, true)
}

// AttentionOver is the armed rows' attention over the given positions
// (ascending; the rows are the last of them), for a cache that no longer
// holds every position: column i of each row is positions[i].
func (o *Observer) AttentionOver(positions []int32) ([]policies.WindowAttention, error) {
	return o.attention(o.source, positions, false)
}

// positionsUpTo is 0, 1, ..., n-1: positions (int32) or columns (int).
func positionsUpTo[T int | int32](n int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = T(i)
	}
	return out
}

// Queries is layer il's query rows (after RoPE) the armed decodes read,
// oldest first: the last window rows of the prompt, each heads x head_dim
// values. The observer must read queries (FromQK, or AlsoQK).
func (o *Observer) Queries(il int) ([][]float32, error) {
	switch {
	case o.err != nil:
		return nil, fmt.Errorf("observe queries: %w", o.err)
	case o.source != FromQK && !o.AlsoQK:
		return nil, fmt.Errorf("observe queries: this observer did not read them")
	case il < 0 || il >= len(o.q):
		return nil, fmt.Errorf("observe queries: layer %d of %d", il, len(o.q))
	case len(o.q[il]) == 0:
		return nil, fmt.Errorf("observe queries: layer %d: no rows read (was the observer armed?)", il)
	}
	rows := make([][]float32, len(o.q[il]))
	for i, r := range o.q[il] {
		rows[i] = r.data
	}
	return rows, nil
}

// attention computes the window rows' attention over positions from src;
// with votes, each head's rows summed into one.
func (o *Observer) attention(src Source, positions []int32, votes bool) ([]policies.WindowAttention, error) {
	colCell, err := o.prepare(src, positions)
	if err != nil {
		return nil, err
	}
	if src == FromSoftmax {
		att, err := o.fromSoftmax(colCell)
		if err != nil || !votes {
			return att, err
		}
		for il := range att {
			att[il] = att[il].Votes()
		}
		return att, nil
	}
	return o.fromQK(colCell, votes)
}

// prepare checks that the observer holds a full window read from src and
// returns the cells of positions (in a buffer reused call to call).
func (o *Observer) prepare(src Source, positions []int32) ([]int, error) {
	if src != o.source && !(src == FromQK && o.AlsoQK) {
		return nil, fmt.Errorf("observe attention: this observer did not read %s inputs", src)
	}
	if o.err != nil {
		return nil, fmt.Errorf("observe attention: %w", o.err)
	}
	buf := o.soft
	if src == FromQK {
		buf = o.q
	}
	for il, rows := range buf {
		if len(rows) != o.window {
			return nil, fmt.Errorf("observe attention: layer %d has %d of %d window rows (is flash attention %s as the observer expects?)",
				il, len(rows), o.window, map[Source]string{FromSoftmax: "off", FromQK: "on"}[o.source])
		}
	}
	var err error
	o.colCell, err = o.cellsOf(o.colCell[:0], positions)
	if err != nil {
		return nil, fmt.Errorf("observe attention: %w", err)
	}
	return o.colCell, nil
}

// cellsOf appends the cells of positions, from the cell map, to dst.
func (o *Observer) cellsOf(dst []int, positions []int32) ([]int, error) {
	for _, p := range positions {
		c, ok := o.cellMap.Cell(p)
		if !ok {
			return nil, fmt.Errorf("position %d has no cell", p)
		}
		dst = append(dst, int(c))
	}
	return dst, nil
}

// StepScores adds a decode step's attention row (the observer armed for
// one row), summed over layers and heads, to dst, one entry per position of
// positions: what H2O accumulates for every generated token, computed
// without the per-layer, per-head matrices VotesOver returns.
func (o *Observer) StepScores(positions []int32, dst []float32) error {
	if o.window != 1 {
		return fmt.Errorf("observe a step: the observer holds a window of %d rows, not 1", o.window)
	}
	colCell, err := o.prepare(o.source, positions)
	if err != nil {
		return err
	}
	s, n := o.shape, len(colCell)
	dst = dst[:n]
	if o.source == FromSoftmax {
		for il := range o.soft {
			row := o.soft[il][0]
			if err := row.checkHeads(il, s.Heads); err != nil {
				return fmt.Errorf("observe a step: %w", err)
			}
			for h := range s.Heads {
				row.addHeadTo(dst, h, colCell)
			}
		}
		return nil
	}
	scores := grow(&o.stepBuf, s.Heads*n)
	for il := range s.Layers {
		if err := o.stepQK(il, colCell, scores); err != nil {
			return err
		}
		for h := range s.Heads {
			policies.Add(dst, scores[h*n:][:n])
		}
	}
	return nil
}

func (o *Observer) fromSoftmax(colCell []int) ([]policies.WindowAttention, error) {
	s, n, w := o.shape, len(colCell), o.window
	out := make([]policies.WindowAttention, s.Layers)
	for il := range out {
		att := policies.WindowAttention{Heads: s.Heads, Rows: w, Cols: n, Data: make([]float32, s.Heads*w*n)}
		for r, row := range o.soft[il] {
			if err := row.checkHeads(il, s.Heads); err != nil {
				return nil, fmt.Errorf("observe attention: %w", err)
			}
			for h := range s.Heads {
				row.addHeadTo(att.Data[(h*w+r)*n:][:n], h, colCell)
			}
		}
		out[il] = att
	}
	return out, nil
}

func (o *Observer) fromQK(colCell []int, votes bool) ([]policies.WindowAttention, error) {
	out := make([]policies.WindowAttention, o.shape.Layers)
	errs := make([]error, o.shape.Layers)
	if s := o.shape; o.window == 1 || s.Layers*s.Heads*o.window*len(colCell)*s.HeadDim < 1<<20 {
		// A decode step's one row stays on the calling thread: right after
		// a decode, llama.cpp's CPU worker threads poll for more work for a
		// while, so goroutines on other threads would wait for a core
		// rather than run beside this one.
		for il := range out {
			var err error
			if out[il], err = o.layerQK(il, colCell, votes); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	workers := min(len(out), runtime.GOMAXPROCS(0))
	// Layers are independent: spread them over the CPUs.
	next := make(chan int, len(out))
	for il := range out {
		next <- il
	}
	close(next)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for il := range next {
				out[il], errs[il] = o.layerQK(il, colCell, votes)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// layerQK computes one layer's window attention from its kept query rows
// and the K rows of the cells in colCell, read from the cache a block at a
// time.
func (o *Observer) layerQK(il int, colCell []int, votes bool) (policies.WindowAttention, error) {
	s, n, w := o.shape, len(colCell), o.window
	if w == 1 {
		att := policies.WindowAttention{Heads: s.Heads, Rows: 1, Cols: n, Data: make([]float32, s.Heads*n)}
		return att, o.stepQK(il, colCell, att.Data)
	}
	// A Qcur row is [head][dim]; the products want [head][row][dim].
	q := grow(&o.qBuf[il], s.Heads*w*s.HeadDim)
	for r, row := range o.q[il] {
		if len(row.data) != s.Heads*s.HeadDim {
			return policies.WindowAttention{}, fmt.Errorf("observe attention: layer %d: Qcur rows hold %d values, want %d", il, len(row.data), s.Heads*s.HeadDim)
		}
		for h := range s.Heads {
			copy(q[(h*w+r)*s.HeadDim:][:s.HeadDim], row.data[h*s.HeadDim:][:s.HeadDim])
		}
	}
	load, err := o.keyLoader(il, colCell)
	if err != nil {
		return policies.WindowAttention{}, err
	}
	if votes {
		return policies.VotesFromKeys(q, s.Heads, w, n, s.KVHeads, s.HeadDim, load)
	}
	// The whole attention (tests and comparisons, not compression): the
	// rows, read at once, go into [kv_head][position][dim] order.
	rowLen := s.KVHeads * s.HeadDim
	rows := make([]float32, n*rowLen)
	if err := load(rows, 0, n); err != nil {
		return policies.WindowAttention{}, err
	}
	k := make([]float32, len(rows))
	for c := range n {
		for kh := range s.KVHeads {
			copy(k[(kh*n+c)*s.HeadDim:][:s.HeadDim], rows[c*rowLen+kh*s.HeadDim:][:s.HeadDim])
		}
	}
	return policies.AttentionFromQK(q, s.Heads, w, k, s.KVHeads, n, s.HeadDim), nil
}

// Keys is layer il's keys of positions (which the cell map must hold),
// read from the K cache as keyLoader reads them, in the order of positions:
// what key-only policies score, without a copy of the sequence's state.
func (o *Observer) Keys(il int, positions []int32) (policies.Keys, error) {
	s := o.shape
	keys := policies.Keys{KVHeads: s.KVHeads, HeadDim: s.HeadDim}
	if il < 0 || il >= s.Layers {
		return keys, fmt.Errorf("observe keys: layer %d of %d", il, s.Layers)
	}
	colCell, err := o.cellsOf(make([]int, 0, len(positions)), positions)
	if err != nil {
		return keys, fmt.Errorf("observe keys: %w", err)
	}
	load, err := o.keyLoader(il, colCell)
	if err != nil {
		return keys, err
	}
	keys.Rows = make([]float32, len(positions)*s.KVHeads*s.HeadDim)
	return keys, load(keys.Rows, 0, len(positions))
}

// keyBlock is the most K rows a step reads from a cache it cannot read in
// place at once.
const keyBlock = 256

// keyLoader reads layer il's K rows of the cells in colCell, column by
// column, as float32: converted straight from the cache when it is F16 in
// host memory (the CPU backend's), otherwise copied out of it (device
// memory, an F32 cache) one run of consecutive cells at a time with
// ggml_backend_tensor_get. Only the rows asked for are ever read.
func (o *Observer) keyLoader(il int, colCell []int) (policies.KeyLoader, error) {
	rowLen := o.shape.KVHeads * o.shape.HeadDim
	k := o.kCache[il]
	if k == (bindings.Tensor{}) {
		return nil, fmt.Errorf("observe attention: layer %d: the K cache tensor was not seen", il)
	}
	ne, nb := k.Ne(), k.Nb()
	if int(ne[0]) != rowLen {
		return nil, fmt.Errorf("observe attention: layer %d: the K cache's rows hold %d values, want %d", il, ne[0], rowLen)
	}
	// The rows of every stream, one after another (kCacheOf).
	rows := ne[1] * ne[2] * ne[3]
	if nb[2] != uint64(ne[1])*nb[1] || nb[3] != uint64(ne[2])*nb[2] {
		rows = ne[1] // the streams are not contiguous: the first one's
	}
	for _, c := range colCell {
		if c < 0 || int64(c) >= rows {
			return nil, fmt.Errorf("observe attention: layer %d: cell %d outside the K cache's %d", il, c, rows)
		}
	}
	if view, ok := k.HostF16(); ok {
		return func(dst []float32, c0, count int) error {
			for j, c := range colCell[c0:][:count] {
				policies.F16ToF32(dst[j*rowLen:][:rowLen], view[c*rowLen:][:rowLen])
			}
			return nil
		}, nil
	}
	elem := map[string]uint64{"f32": 4, "f16": 2}[k.TypeName()]
	if elem == 0 {
		return nil, fmt.Errorf("observe attention: layer %d: the K cache's type is %s; kvtrim reads f16 and f32 caches", il, k.TypeName())
	}
	if nb[1] != uint64(rowLen)*elem {
		return nil, fmt.Errorf("observe attention: layer %d: the K cache's rows are not contiguous (stride %d)", il, nb[1])
	}
	var half []uint16
	return func(dst []float32, c0, count int) error {
		cells := colCell[c0:][:count]
		for j := 0; j < len(cells); {
			run := 1 // columns j.. whose cells follow one another
			for j+run < len(cells) && cells[j+run] == cells[j]+run {
				run++
			}
			out, off := dst[j*rowLen:][:run*rowLen], uint64(cells[j])*nb[1]
			var err error
			if elem == 4 {
				err = bindings.ReadTensor(k, out, off)
			} else {
				half = slices.Grow(half[:0], len(out))[:len(out)]
				if err = bindings.ReadTensor(k, half, off); err == nil {
					policies.F16ToF32(out, half)
				}
			}
			if err != nil {
				return fmt.Errorf("observe attention: layer %d, cells %d-%d: %w", il, cells[j], cells[j]+run-1, err)
			}
			j += run
		}
		return nil
	}, nil
}

// stepQK is layerQK for a decode step's single query row: its dot products
// are taken straight from the cell-indexed key rows (the F16 cache itself
// when it is in host memory, else blocks read from it), with no copy into a
// position-ordered layout, in policies.DotHeads calls that read each key
// row once, in the order of colCell, for all the heads. The scores (head
// by head, one per position) go to scores. The last of colCell is the
// row's own position.
func (o *Observer) stepQK(il int, colCell []int, scores []float32) error {
	s, n := o.shape, len(colCell)
	rowLen, dim := s.KVHeads*s.HeadDim, s.HeadDim
	q := o.q[il][0].data
	if len(q) != s.Heads*dim {
		return fmt.Errorf("observe attention: layer %d: Qcur rows hold %d values, want %d", il, len(q), s.Heads*dim)
	}
	group := s.Heads / s.KVHeads
	if view, ok := o.kCache[il].HostF16(); ok && int(o.kCache[il].Ne()[0]) == rowLen && (slices.Max(colCell)+1)*rowLen <= len(view) {
		policies.DotHeadsF16(scores, q, view, colCell, rowLen, dim, group)
	} else {
		load, err := o.keyLoader(il, colCell)
		if err != nil {
			return err
		}
		bc := min(n, keyBlock)
		rows, idx, part := make([]float32, bc*rowLen), positionsUpTo[int](bc), make([]float32, s.Heads*bc)
		for c0 := 0; c0 < n; c0 += keyBlock {
			bc := min(keyBlock, n-c0)
			if err := load(rows[:bc*rowLen], c0, bc); err != nil {
				return err
			}
			policies.DotHeads(part[:s.Heads*bc], q, rows[:bc*rowLen], idx[:bc], rowLen, dim, group)
			for h := range s.Heads {
				copy(scores[h*n+c0:][:bc], part[h*bc:][:bc])
			}
		}
	}
	scale := float32(1 / math.Sqrt(float64(dim)))
	for h := range s.Heads {
		head := scores[h*n:][:n]
		policies.Scale(head, scale)
		policies.Softmax(head)
	}
	return nil
}

// grow returns (*buf)[:n], reallocating when it is too small.
func grow(buf *[]float32, n int) []float32 {
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	return (*buf)[:n]
}
