package kvtrim

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// snapshotMagic starts a snapshot written by WriteTo: kvtrim's own format,
// since a compressed cache needs its compression and positions beside the
// cells, which llama.cpp's sequence state files do not carry.
const snapshotMagic = "kvtrimS1"

// snapshotHeader is what a snapshot file says besides its tokens and cells.
type snapshotHeader struct {
	Compression Compression `json:"compression"`
	NextPos     int32       `json:"next_pos"`
	Used        int         `json:"used"`
	Evicted     int         `json:"evicted"`
	Tokens      int         `json:"tokens"`
	StateBytes  int         `json:"state_bytes"`
}

// maxSnapshotHeader bounds a snapshot file's JSON header.
const maxSnapshotHeader = 1 << 20

// WriteSnapshot writes sn and the tokens it stands for (the sequence's
// prompts and answers, in position order) to w: the magic, a little-endian
// u32 header length, the JSON header, the tokens as little-endian i32, then
// the cells as llama_state_seq_get_data wrote them.
func WriteSnapshot(w io.Writer, sn *Snapshot, tokens []Token) (int64, error) {
	h, err := json.Marshal(snapshotHeader{
		Compression: sn.compression, NextPos: sn.nextPos, Used: sn.used, Evicted: sn.evicted,
		Tokens: len(tokens), StateBytes: len(sn.state),
	})
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriter(w)
	bw.WriteString(snapshotMagic)
	binary.Write(bw, binary.LittleEndian, uint32(len(h)))
	bw.Write(h)
	binary.Write(bw, binary.LittleEndian, tokens)
	bw.Write(sn.state)
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("write snapshot: %w", err)
	}
	return int64(len(snapshotMagic) + 4 + len(h) + 4*len(tokens) + len(sn.state)), nil
}

// ReadSnapshot reads what WriteSnapshot wrote, at most limit bytes of
// cells: the snapshot and its tokens.
func ReadSnapshot(r io.Reader, limit int) (*Snapshot, []Token, error) {
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != snapshotMagic {
		return nil, nil, errors.New("read snapshot: not a kvtrim snapshot file")
	}
	var n uint32
	if err := binary.Read(r, binary.LittleEndian, &n); err != nil || n > maxSnapshotHeader {
		return nil, nil, errors.New("read snapshot: bad header length")
	}
	hb := make([]byte, n)
	if _, err := io.ReadFull(r, hb); err != nil {
		return nil, nil, fmt.Errorf("read snapshot header: %w", err)
	}
	var h snapshotHeader
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, nil, fmt.Errorf("read snapshot header: %w", err)
	}
	switch {
	case h.Tokens < 0 || h.Used < 0 || h.Used > h.Tokens || int(h.NextPos) != h.Tokens || h.StateBytes < 0:
		return nil, nil, fmt.Errorf("read snapshot: inconsistent header %+v", h)
	case h.StateBytes > limit:
		return nil, nil, fmt.Errorf("read snapshot: %d bytes of cells, more than the %d a slot holds", h.StateBytes, limit)
	case h.Tokens > limit:
		return nil, nil, fmt.Errorf("read snapshot: %d tokens, more than a slot holds", h.Tokens)
	}
	tokens := make([]Token, h.Tokens)
	if err := binary.Read(r, binary.LittleEndian, tokens); err != nil {
		return nil, nil, fmt.Errorf("read snapshot tokens: %w", err)
	}
	state := make([]byte, h.StateBytes)
	if _, err := io.ReadFull(r, state); err != nil {
		return nil, nil, fmt.Errorf("read snapshot cells: %w", err)
	}
	return &Snapshot{state: state, compression: h.Compression, nextPos: h.NextPos, used: h.Used, evicted: h.Evicted}, tokens, nil
}

// IsLlamaSeqFile reports whether a file starting with head (its first 4
// bytes at least) is one of llama.cpp's sequence state files
// (llama_state_seq_save_file), which llama-server's slot saves are.
func IsLlamaSeqFile(head []byte) bool {
	return len(head) >= 4 && binary.LittleEndian.Uint32(head) == 0x67677371 // 'ggsq'
}
