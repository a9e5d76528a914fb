package hooks

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/kvtrim/kvtrim/policies"
)

// StatePositions reads the cell positions, in cell order, from a sequence
// state saved by llama_state_seq_get_data for one sequence of a model with
// plain (no cell extension) attention cells: a u32 magic and the i32
// sequence id, a u32 stream count, then per stream a u32 cell count and,
// for a stream with cells, per cell i32 position, u32 sequence count and
// that many i32 sequence ids, then the cells' data. The sequence's cells
// are all in one stream: the first with any.
func StatePositions(state []byte, seq int32) ([]int32, error) {
	pos, _, err := readCells(state, seq)
	return pos, err
}

// readCells reads a sequence state up to the end of its cells
// (StatePositions): the positions in cell order, and a reader at the
// byte after them, where the cells' data begins.
func readCells(state []byte, seq int32) ([]int32, *reader, error) {
	r := &reader{b: state}
	r.u32() // magic
	if s := int32(r.u32()); r.err == nil && s != seq {
		return nil, nil, fmt.Errorf("sequence state: saved from sequence %d, want %d", s, seq)
	}
	// One stream per sequence (llama.cpp's non-unified cache) saves every
	// stream, the others empty: the cells are in the first that has any.
	nStream := r.u32()
	if r.err != nil || nStream == 0 || nStream > 1<<16 {
		return nil, nil, fmt.Errorf("sequence state: %d streams", nStream)
	}
	n := r.u32()
	for s := uint32(1); s < nStream && n == 0 && r.err == nil; s++ {
		n = r.u32()
	}
	if r.err != nil || int(n) > len(state)/8 {
		return nil, nil, fmt.Errorf("sequence state: bad cell count %d", n)
	}
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(r.u32())
		nSeq := r.u32()
		if nSeq != 1 {
			return nil, nil, fmt.Errorf("sequence state: cell %d has %d sequence ids, want 1", i, nSeq)
		}
		if s := int32(r.u32()); s != seq {
			return nil, nil, fmt.Errorf("sequence state: cell %d belongs to sequence %d, want %d", i, s, seq)
		}
	}
	if r.err != nil {
		return nil, nil, fmt.Errorf("sequence state: %w", r.err)
	}
	return out, r, nil
}

type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) u32() uint32 {
	if r.err != nil || r.off+4 > len(r.b) {
		r.err = fmt.Errorf("truncated at byte %d", r.off)
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

// Restream rewrites a one-stream sequence state (saved from a context
// holding one sequence) for a context whose cache keeps nStream streams, one
// per sequence (llama.cpp's non-unified cache), so that it loads into any
// one sequence there: the stream count becomes nStream and the other
// streams are written empty. llama.cpp loads a sequence's cells into that
// sequence's stream whichever block carries them. Only a plain cache's
// state (one cache, nothing after its streams) can be rewritten.
func Restream(state []byte, nStream int) ([]byte, error) {
	const streamsAt = 8 // after the magic and the sequence id
	r := reader{b: state, off: streamsAt}
	n := r.u32()
	if r.err == nil && int(n) == nStream {
		return state, nil // saved from a context like it (a group's)
	}
	if r.err != nil || n != 1 {
		return nil, fmt.Errorf("sequence state: %d streams, kvtrim rewrites one", n)
	}
	if nStream < 1 {
		return nil, fmt.Errorf("sequence state: %d streams asked", nStream)
	}
	out := make([]byte, len(state)+4*(nStream-1))
	copy(out, state)
	binary.LittleEndian.PutUint32(out[streamsAt:], uint32(nStream))
	return out, nil // the added streams' cell counts are the zeros at the end
}

// ggml types a K or V cache may have that ReadStateKV reads.
const (
	ggmlF32 = 0
	ggmlF16 = 1
)

// StateKV is the keys and values of a one-stream sequence state (as
// StatePositions reads its positions), by position: after the cells, a
// u32 (V transposed) and the u32 layer count, then per layer an i32 ggml
// type, a u64 row size and one key row per cell, in cell order; then the
// values, per layer either the same way (an i32 type, a u64 row size, a
// row per cell) or transposed (an i32 type, a u32 element size, the u32
// row length, then per value dimension one element per cell). Positions
// must be 0..n-1, as a prompt just decoded holds them; the cache F16 or
// F32, of KVHeads x HeadDim values per row. Layers are converted one at a
// time, when asked.
type StateKV struct {
	Layers, KVHeads, HeadDim int
	// Positions are the positions held, ascending: row i of Keys and
	// Values is Positions[i]'s.
	Positions    []int32
	state        []byte
	cellOf       []int // row (rank of its position) -> index in the state's cell order
	vTrans       bool
	keys, values []stateLayer
}

// stateLayer is where one layer's rows start in the state, and their type.
type stateLayer struct {
	typ uint32
	off int
}

// ReadStateKV parses a sequence state for its keys and values.
func ReadStateKV(state []byte, seq int32, kvHeads, headDim int) (*StateKV, error) {
	pos, r, err := readCells(state, seq)
	if err != nil {
		return nil, err
	}
	kv := &StateKV{KVHeads: kvHeads, HeadDim: headDim, state: state, cellOf: make([]int, len(pos))}
	// Rows go in position order: a chunked prefill's positions have gaps.
	for i := range kv.cellOf {
		kv.cellOf[i] = i
	}
	slices.SortFunc(kv.cellOf, func(a, b int) int { return cmp.Compare(pos[a], pos[b]) })
	kv.Positions = make([]int32, len(pos))
	for i, cell := range kv.cellOf {
		kv.Positions[i] = pos[cell]
		if i > 0 && pos[cell] == kv.Positions[i-1] {
			return nil, fmt.Errorf("sequence state: position %d is held twice", pos[cell])
		}
	}
	kv.vTrans = r.u32() != 0
	kv.Layers = int(r.u32())
	rowLen := kvHeads * headDim
	n := len(pos)
	layers := func(what string, transposed bool) ([]stateLayer, error) {
		out := make([]stateLayer, kv.Layers)
		for il := range out {
			typ := r.u32()
			elem := uint64(4)
			if typ == ggmlF16 {
				elem = 2
			}
			var size uint64 // of the layer's data
			if transposed {
				el, dims := r.u32(), r.u32()
				if r.err == nil && (uint64(el) != elem || int(dims) != rowLen) {
					return nil, fmt.Errorf("sequence state: layer %d %s of %d-byte elements in rows of %d, want %d and %d (%d heads x %d)", il, what, el, dims, elem, rowLen, kvHeads, headDim)
				}
				size = elem * uint64(rowLen) * uint64(n)
			} else {
				row := uint64(r.u32()) | uint64(r.u32())<<32
				if r.err == nil && row != elem*uint64(rowLen) {
					return nil, fmt.Errorf("sequence state: layer %d %s rows of %d bytes, want %d (%d heads x %d)", il, what, row, elem*uint64(rowLen), kvHeads, headDim)
				}
				size = row * uint64(n)
			}
			switch {
			case r.err != nil:
				return nil, fmt.Errorf("sequence state: layer %d %s: %w", il, what, r.err)
			case typ != ggmlF32 && typ != ggmlF16:
				return nil, fmt.Errorf("sequence state: layer %d %s of ggml type %d; kvtrim reads F16 and F32 caches", il, what, typ)
			case uint64(r.off)+size > uint64(len(state)):
				return nil, fmt.Errorf("sequence state: layer %d %s truncated", il, what)
			}
			out[il] = stateLayer{typ: typ, off: r.off}
			r.off += int(size)
		}
		return out, nil
	}
	if kv.keys, err = layers("keys", false); err != nil {
		return nil, err
	}
	if kv.values, err = layers("values", kv.vTrans); err != nil {
		return nil, err
	}
	return kv, nil
}

// Keys is one layer's keys in position order (Positions).
func (kv *StateKV) Keys(il int) (policies.Keys, error) {
	rows, err := kv.rows(kv.keys, il, false)
	return policies.Keys{KVHeads: kv.KVHeads, HeadDim: kv.HeadDim, Rows: rows}, err
}

// Values is one layer's values in position order, laid out as Keys.
func (kv *StateKV) Values(il int) (policies.Keys, error) {
	rows, err := kv.rows(kv.values, il, kv.vTrans)
	return policies.Keys{KVHeads: kv.KVHeads, HeadDim: kv.HeadDim, Rows: rows}, err
}

// rows converts one layer's rows to float32 in position order, reading a
// transposed layer one value dimension at a time.
func (kv *StateKV) rows(layers []stateLayer, il int, transposed bool) ([]float32, error) {
	if il < 0 || il >= kv.Layers {
		return nil, fmt.Errorf("sequence state: layer %d of %d", il, kv.Layers)
	}
	rowLen, n := kv.KVHeads*kv.HeadDim, len(kv.cellOf)
	lr := layers[il]
	elem := 4
	if lr.typ == ggmlF16 {
		elem = 2
	}
	out := make([]float32, n*rowLen)
	if transposed {
		col := make([]float32, n) // one value dimension, in cell order
		for j := range rowLen {
			if err := kv.decode(col, lr.off+j*n*elem, lr.typ); err != nil {
				return nil, fmt.Errorf("sequence state: layer %d, value dimension %d: %w", il, j, err)
			}
			for p, cell := range kv.cellOf {
				out[p*rowLen+j] = col[cell]
			}
		}
		return out, nil
	}
	for p, cell := range kv.cellOf {
		if err := kv.decode(out[p*rowLen:][:rowLen], lr.off+cell*rowLen*elem, lr.typ); err != nil {
			return nil, fmt.Errorf("sequence state: layer %d, cell %d: %w", il, cell, err)
		}
	}
	return out, nil
}

// decode reads len(dst) F16 or F32 values at off.
func (kv *StateKV) decode(dst []float32, off int, typ uint32) error {
	if typ == ggmlF16 {
		half := make([]uint16, len(dst))
		if _, err := binary.Decode(kv.state[off:], binary.LittleEndian, half); err != nil {
			return err
		}
		policies.F16ToF32(dst, half)
		return nil
	}
	_, err := binary.Decode(kv.state[off:], binary.LittleEndian, dst)
	return err
}
