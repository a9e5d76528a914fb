package bindings

import "fmt"

// Memory is a context's KV memory: which positions of which sequences it
// holds, and the operations that remove and shift them.
type Memory struct {
	lib *Library
	ptr uintptr
}

// Clear empties the memory (and zeroes its buffers if data is set).
func (m *Memory) Clear(data bool) { m.lib.fn.llamaMemoryClear(m.ptr, data) }

// SeqRm removes the positions [p0, p1) of seq (p0 < 0: from 0; p1 < 0: to the
// end). It reports false when llama.cpp cannot remove part of a sequence.
func (m *Memory) SeqRm(seq SeqID, p0, p1 Pos) bool {
	return m.lib.fn.llamaMemorySeqRm(m.ptr, seq, p0, p1)
}

// SeqAdd adds delta to the positions [p0, p1) of seq. RoPE is re-applied
// lazily at the next decode.
func (m *Memory) SeqAdd(seq SeqID, p0, p1, delta Pos) {
	m.lib.fn.llamaMemorySeqAdd(m.ptr, seq, p0, p1, delta)
}

// SeqPosMin is the smallest position of seq in the memory, or -1 if it is empty.
func (m *Memory) SeqPosMin(seq SeqID) Pos { return m.lib.fn.llamaMemorySeqPosMin(m.ptr, seq) }

// SeqPosMax is the largest position of seq in the memory, or -1 if it is empty.
func (m *Memory) SeqPosMax(seq SeqID) Pos { return m.lib.fn.llamaMemorySeqPosMax(m.ptr, seq) }

// CanShift reports whether SeqAdd is supported by this memory.
func (m *Memory) CanShift() bool { return m.lib.fn.llamaMemoryCanShift(m.ptr) }

// StateFlags are llama_state_seq_flags.
type StateFlags uint32

// StateOnDevice keeps a sequence's saved tensors in device buffers
// (LLAMA_STATE_SEQ_FLAGS_ON_DEVICE).
const StateOnDevice StateFlags = 2

// SeqState returns the saved state of seq (its cells' positions, K and V),
// as llama_state_seq_get_data_ext writes it with flags.
func (c *Context) SeqState(seq SeqID, flags StateFlags) ([]byte, error) {
	f := c.lib.fn
	size := f.llamaStateSeqGetSizeExt(c.ptr, seq, uint32(flags))
	if size == 0 {
		return nil, fmt.Errorf("save state of sequence %d: it is empty", seq)
	}
	buf := make([]byte, size)
	if n := f.llamaStateSeqGetDataExt(c.ptr, &buf[0], size, seq, uint32(flags)); n != size {
		return nil, fmt.Errorf("save state of sequence %d: wrote %d of %d bytes", seq, n, size)
	}
	return buf, nil
}

// SetSeqState loads a state saved by SeqState into seq, which should be empty.
func (c *Context) SetSeqState(seq SeqID, state []byte, flags StateFlags) error {
	if len(state) == 0 {
		return fmt.Errorf("load state of sequence %d: empty state", seq)
	}
	if n := c.lib.fn.llamaStateSeqSetDataExt(c.ptr, &state[0], uint64(len(state)), seq, uint32(flags)); n == 0 {
		return fmt.Errorf("load state of sequence %d: llama.cpp refused it (no room in the cache, or a state from another model)", seq)
	}
	return nil
}

// SeqStateBasic and SetSeqStateBasic are the plain (non-_ext) forms, which
// always copy through host memory.
func (c *Context) SeqStateBasic(seq SeqID) ([]byte, error) {
	f := c.lib.fn
	size := f.llamaStateSeqGetSize(c.ptr, seq)
	if size == 0 {
		return nil, fmt.Errorf("save state of sequence %d: it is empty", seq)
	}
	buf := make([]byte, size)
	if n := f.llamaStateSeqGetData(c.ptr, &buf[0], size, seq); n != size {
		return nil, fmt.Errorf("save state of sequence %d: wrote %d of %d bytes", seq, n, size)
	}
	return buf, nil
}

// SetSeqStateBasic loads a state saved by SeqStateBasic into seq.
func (c *Context) SetSeqStateBasic(seq SeqID, state []byte) error {
	if len(state) == 0 {
		return fmt.Errorf("load state of sequence %d: empty state", seq)
	}
	if n := c.lib.fn.llamaStateSeqSetData(c.ptr, &state[0], uint64(len(state)), seq); n == 0 {
		return fmt.Errorf("load state of sequence %d: llama.cpp refused it", seq)
	}
	return nil
}
