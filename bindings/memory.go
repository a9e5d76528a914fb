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
// as llama_state_seq_get_data_ext writes it with flags. The state always
// starts with a header, a magic and the sequence id, as every release
// after b8390 writes it; for b8390, which writes none, kvtrim adds it.
// StateOnDevice is dropped where the release's on-device round trip does
// not work (Release.StateOnDevice).
func (c *Context) SeqState(seq SeqID, flags StateFlags) ([]byte, error) {
	return c.SeqStateWith(seq, flags, nil)
}

// SeqStateWith is SeqState writing into memory from alloc, which is given
// the state's length and returns a slice of that length, or nil when it
// has no room for it (then SeqStateWith fails and writes nothing). A nil
// alloc allocates on Go's heap, as SeqState does.
func (c *Context) SeqStateWith(seq SeqID, flags StateFlags, alloc func(n int) []byte) ([]byte, error) {
	f := c.lib.fn
	flags = c.lib.stateFlags(flags)
	return c.lib.seqState(seq, alloc, func() uint64 { return f.llamaStateSeqGetSizeExt(c.ptr, seq, uint32(flags)) },
		func(dst *byte, size uint64) uint64 {
			return f.llamaStateSeqGetDataExt(c.ptr, dst, size, seq, uint32(flags))
		})
}

// SetSeqState loads a state saved by SeqState into seq, which should be empty.
func (c *Context) SetSeqState(seq SeqID, state []byte, flags StateFlags) error {
	flags = c.lib.stateFlags(flags)
	return c.lib.setSeqState(seq, state, func(src *byte, size uint64) uint64 {
		return c.lib.fn.llamaStateSeqSetDataExt(c.ptr, src, size, seq, uint32(flags))
	})
}

// SeqStateBasic and SetSeqStateBasic are the plain (non-_ext) forms, which
// always copy through host memory.
func (c *Context) SeqStateBasic(seq SeqID) ([]byte, error) {
	f := c.lib.fn
	return c.lib.seqState(seq, nil, func() uint64 { return f.llamaStateSeqGetSize(c.ptr, seq) },
		func(dst *byte, size uint64) uint64 { return f.llamaStateSeqGetData(c.ptr, dst, size, seq) })
}

// SetSeqStateBasic loads a state saved by SeqStateBasic into seq.
func (c *Context) SetSeqStateBasic(seq SeqID, state []byte) error {
	return c.lib.setSeqState(seq, state, func(src *byte, size uint64) uint64 {
		return c.lib.fn.llamaStateSeqSetData(c.ptr, src, size, seq)
	})
}

// stateMagic starts a sequence state in memory (llama.cpp's io_magic),
// before the sequence id.
const stateMagic uint32 = 0xaf143cd8

// stateHeaderSize is the magic and the sequence id.
const stateHeaderSize = 8

// stateHeader is the header of a state saved from seq.
func stateHeader(seq SeqID) []byte {
	h := make([]byte, stateHeaderSize)
	binary.LittleEndian.PutUint32(h, stateMagic)
	binary.LittleEndian.PutUint32(h[4:], uint32(seq))
	return h
}

// stateFlags drops the flags the release cannot honour.
func (l *Library) stateFlags(flags StateFlags) StateFlags {
	if !l.Release.StateOnDevice {
		flags &^= StateOnDevice
	}
	return flags
}

// seqState saves a sequence with a size and a get call, in the form
// SeqState describes, into memory from alloc (nil: a new slice).
func (l *Library) seqState(seq SeqID, alloc func(n int) []byte, size func() uint64, get func(dst *byte, size uint64) uint64) ([]byte, error) {
	n := size()
	if n == 0 {
		return nil, fmt.Errorf("save state of sequence %d: it is empty", seq)
	}
	at := 0
	if !l.Release.StateHeader {
		at = stateHeaderSize
	}
	var buf []byte
	if alloc == nil {
		buf = make([]byte, at+int(n))
	} else if buf = alloc(at + int(n)); len(buf) != at+int(n) {
		return nil, fmt.Errorf("save state of sequence %d: no room for its %d bytes", seq, at+int(n))
	}
	if got := get(&buf[at], n); got != n {
		return nil, fmt.Errorf("save state of sequence %d: wrote %d of %d bytes", seq, got, n)
	}
	copy(buf, stateHeader(seq)[:at])
	return buf, nil
}

// setSeqState loads a state in SeqState's form with a set call, without
// its header for a release that writes none.
func (l *Library) setSeqState(seq SeqID, state []byte, set func(src *byte, size uint64) uint64) error {
	if len(state) <= stateHeaderSize || binary.LittleEndian.Uint32(state) != stateMagic {
		return fmt.Errorf("load state of sequence %d: not a sequence state (%d bytes, no header)", seq, len(state))
	}
	if !l.Release.StateHeader {
		state = state[stateHeaderSize:]
	}
	if n := set(&state[0], uint64(len(state))); n == 0 {
		return fmt.Errorf("load state of sequence %d: llama.cpp refused it (no room in the cache, or a state from another model)", seq)
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

// seqFileMagic starts llama.cpp's sequence state files
// (llama_state_seq_save_file: LLAMA_STATE_SEQ_MAGIC), before the
// release's LLAMA_STATE_SEQ_VERSION (Release.SeqFileVersion).
const seqFileMagic uint32 = 0x67677371 // 'ggsq'

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
	case binary.LittleEndian.Uint32(b[4:]) != c.lib.Release.SeqFileVersion:
		return nil, 0, fmt.Errorf("load %s: sequence state file version %d, but llama.cpp %s's is %d", path, binary.LittleEndian.Uint32(b[4:]), c.lib.Release.Name, c.lib.Release.SeqFileVersion)
	}
	n := int64(binary.LittleEndian.Uint32(b[8:]))
	if n > int64(maxTokens) || 12+4*n > int64(len(b)) {
		return nil, 0, fmt.Errorf("load %s: %d tokens, more than the file or the %d it may hold", path, n, maxTokens)
	}
	tokens := make([]Token, n)
	for i := range tokens {
		tokens[i] = Token(binary.LittleEndian.Uint32(b[12+4*i:]))
	}
	// SeqState's form is the file's cells after the in-memory header.
	state := append(stateHeader(seq), b[12+4*n:]...)
	if err := c.SetSeqState(seq, state, 0); err != nil {
		return nil, 0, fmt.Errorf("load %s: %w", path, err)
	}
	return tokens, int64(len(b)), nil
}
