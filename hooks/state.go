package hooks

import (
	"encoding/binary"
	"fmt"

	"github.com/kvtrim/kvtrim/policies"
)

// StatePositions reads the cell positions, in cell order, from a sequence
// state saved by llama_state_seq_get_data for one sequence of a model with
// plain (one-stream, no cell extension) attention cells: a u32 magic and the
// i32 sequence id, a u32 stream count, then per stream a u32 cell count and,
// per cell, i32 position, u32 sequence count and that many i32 sequence ids.
func StatePositions(state []byte, seq int32) ([]int32, error) {
	pos, _, err := readCells(state, seq)
	return pos, err
}

// readCells reads a one-stream sequence state up to the end of its cells
// (StatePositions): the positions in cell order, and a reader at the
// byte after them, where the cells' data begins.
func readCells(state []byte, seq int32) ([]int32, *reader, error) {
	r := &reader{b: state}
	r.u32() // magic
	if s := int32(r.u32()); r.err == nil && s != seq {
		return nil, nil, fmt.Errorf("sequence state: saved from sequence %d, want %d", s, seq)
	}
	nStream := r.u32()
	if r.err != nil || nStream != 1 {
		return nil, nil, fmt.Errorf("sequence state: %d streams, kvtrim reads one", nStream)
	}
	n := r.u32()
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
	if n := r.u32(); r.err != nil || n != 1 {
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

// ggml types a K cache may have that StateKeys reads.
const (
	ggmlF32 = 0
	ggmlF16 = 1
)

// StateKeys reads the keys from a one-stream sequence state (as
// StatePositions reads its positions): after the cells, a u32 (V
// transposed) and the u32 layer count, then per layer an i32 ggml type, a
// u64 row size and one row per cell, in cell order. It returns the cells'
// positions and, per layer, the keys in position order (positions must be
// 0..n-1, as a prompt just decoded holds them), for an F16 or F32 cache of
// kvHeads x headDim values per row. Layers are converted one at a time,
// when asked.
func StateKeys(state []byte, seq int32, kvHeads, headDim int) (layers int, keys func(layer int) (policies.Keys, error), err error) {
	pos, r, err := readCells(state, seq)
	if err != nil {
		return 0, nil, err
	}
	cellOf := make([]int, len(pos)) // position -> index in the state's cell order
	for i, p := range pos {
		if p < 0 || int(p) >= len(pos) {
			return 0, nil, fmt.Errorf("sequence state: cell %d holds position %d, outside 0..%d", i, p, len(pos)-1)
		}
		cellOf[p] = i
	}
	r.u32() // V transposed
	nLayer := int(r.u32())
	rowLen := kvHeads * headDim
	type layerRows struct {
		typ uint32
		off int
	}
	rows := make([]layerRows, nLayer)
	for il := range rows {
		typ := r.u32()
		size := uint64(r.u32()) | uint64(r.u32())<<32
		want := uint64(rowLen) * 4
		if typ == ggmlF16 {
			want = uint64(rowLen) * 2
		}
		switch {
		case r.err != nil:
			return 0, nil, fmt.Errorf("sequence state: layer %d: %w", il, r.err)
		case typ != ggmlF32 && typ != ggmlF16:
			return 0, nil, fmt.Errorf("sequence state: layer %d keys of ggml type %d; kvtrim reads F16 and F32 caches", il, typ)
		case size != want:
			return 0, nil, fmt.Errorf("sequence state: layer %d key rows of %d bytes, want %d (%d heads x %d)", il, size, want, kvHeads, headDim)
		case r.off+int(size)*len(pos) > len(state):
			return 0, nil, fmt.Errorf("sequence state: layer %d keys truncated", il)
		}
		rows[il] = layerRows{typ: typ, off: r.off}
		r.off += int(size) * len(pos)
	}
	keys = func(il int) (policies.Keys, error) {
		if il < 0 || il >= nLayer {
			return policies.Keys{}, fmt.Errorf("sequence state: layer %d of %d", il, nLayer)
		}
		k := policies.Keys{KVHeads: kvHeads, HeadDim: headDim, Rows: make([]float32, len(pos)*rowLen)}
		lr := rows[il]
		var half []uint16
		if lr.typ == ggmlF16 {
			half = make([]uint16, rowLen)
		}
		for p, cell := range cellOf {
			dst := k.Rows[p*rowLen:][:rowLen]
			var err error
			if half != nil {
				_, err = binary.Decode(state[lr.off+cell*rowLen*2:], binary.LittleEndian, half)
				policies.F16ToF32(dst, half)
			} else {
				_, err = binary.Decode(state[lr.off+cell*rowLen*4:], binary.LittleEndian, dst)
			}
			if err != nil {
				return policies.Keys{}, fmt.Errorf("sequence state: layer %d, cell %d: %w", il, cell, err)
			}
		}
		return k, nil
	}
	return nLayer, keys, nil
}
