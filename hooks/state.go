package hooks

import (
	"encoding/binary"
	"fmt"
)

// StatePositions reads the cell positions, in cell order, from a sequence
// state saved by llama_state_seq_get_data for one sequence of a model with
// plain (one-stream, no cell extension) attention cells: a u32 magic and the
// i32 sequence id, a u32 stream count, then per stream a u32 cell count and,
// per cell, i32 position, u32 sequence count and that many i32 sequence ids.
func StatePositions(state []byte, seq int32) ([]int32, error) {
	r := reader{b: state}
	r.u32() // magic
	if s := int32(r.u32()); r.err == nil && s != seq {
		return nil, fmt.Errorf("sequence state: saved from sequence %d, want %d", s, seq)
	}
	nStream := r.u32()
	if r.err != nil || nStream != 1 {
		return nil, fmt.Errorf("sequence state: %d streams, kvtrim reads one", nStream)
	}
	n := r.u32()
	if r.err != nil || int(n) > len(state)/8 {
		return nil, fmt.Errorf("sequence state: bad cell count %d", n)
	}
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(r.u32())
		nSeq := r.u32()
		if nSeq != 1 {
			return nil, fmt.Errorf("sequence state: cell %d has %d sequence ids, want 1", i, nSeq)
		}
		if s := int32(r.u32()); s != seq {
			return nil, fmt.Errorf("sequence state: cell %d belongs to sequence %d, want %d", i, s, seq)
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("sequence state: %w", r.err)
	}
	return out, nil
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
