package bindings

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime"
)

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

// SaveSeqFile writes seq's cells to path as llama_state_seq_save_file
// does, with tokens beside them (llama-server stores its token list
// there): llama.cpp's sequence state file, which llama-server's slot saves
// are. It returns the bytes written.
func (c *Context) SaveSeqFile(path string, seq SeqID, tokens []Token) (int64, error) {
	var first *Token
	if len(tokens) > 0 {
		first = &tokens[0]
	}
	n := c.lib.fn.llamaStateSeqSaveFile(c.ptr, cString(path), seq, first, uint64(len(tokens)))
	runtime.KeepAlive(tokens)
	if n == 0 {
		return 0, fmt.Errorf("save sequence %d to %s: llama.cpp wrote nothing", seq, path)
	}
	return int64(n), nil
}

// seqFileMagic and seqFileVersion start llama.cpp's sequence state files
// (llama_state_seq_save_file: LLAMA_STATE_SEQ_MAGIC, _VERSION).
const (
	seqFileMagic   uint32 = 0x67677371 // 'ggsq'
	seqFileVersion uint32 = 3
)

// LoadSeqFile loads a file SaveSeqFile (or llama-server) wrote into seq,
// which should be empty, and returns the tokens stored beside the cells
// (at most maxTokens) and the bytes read (at most maxBytes). It reads the
// file itself and hands llama.cpp the cells through
// llama_state_seq_set_data, which refuses a damaged state, where
// llama_state_seq_load_file would abort the process on a truncated file.
func (c *Context) LoadSeqFile(path string, seq SeqID, maxTokens int, maxBytes int64) ([]Token, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxBytes+1))
	switch {
	case err != nil:
		return nil, 0, fmt.Errorf("read %s: %w", path, err)
	case int64(len(b)) > maxBytes:
		return nil, 0, fmt.Errorf("load %s: larger than the %d bytes it may be", path, maxBytes)
	case len(b) < 12 || binary.LittleEndian.Uint32(b) != seqFileMagic:
		return nil, 0, fmt.Errorf("load %s: not a llama.cpp sequence state file", path)
	case binary.LittleEndian.Uint32(b[4:]) != seqFileVersion:
		return nil, 0, fmt.Errorf("load %s: sequence state file version %d, this libllama's is %d", path, binary.LittleEndian.Uint32(b[4:]), seqFileVersion)
	}
	n := int64(binary.LittleEndian.Uint32(b[8:]))
	if n > int64(maxTokens) || 12+4*n > int64(len(b)) {
		return nil, 0, fmt.Errorf("load %s: %d tokens, more than the file or the %d it may hold", path, n, maxTokens)
	}
	tokens := make([]Token, n)
	for i := range tokens {
		tokens[i] = Token(binary.LittleEndian.Uint32(b[12+4*i:]))
	}
	// llama_state_seq_get_data's form is the file's cells after an
	// in-memory header (a magic and the sequence id), taken from this
	// libllama's own empty state rather than hard-coded.
	size := c.lib.fn.llamaStateSeqGetSizeExt(c.ptr, seq, 0)
	if size < 8 {
		return nil, 0, fmt.Errorf("load %s: libllama gave a %d-byte empty state", path, size)
	}
	head := make([]byte, size)
	c.lib.fn.llamaStateSeqGetDataExt(c.ptr, &head[0], size, seq, 0)
	state := append(head[:8:8], b[12+4*n:]...)
	if err := c.SetSeqState(seq, state, 0); err != nil {
		return nil, 0, fmt.Errorf("load %s: %w", path, err)
	}
	return tokens, int64(len(b)), nil
}
