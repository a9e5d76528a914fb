package bindings

import "unsafe"

// Batch is a llama_batch allocated by llama.cpp: tokens with explicit
// positions, sequence ids and output flags. Fill it with Add, Decode it, then
// Clear it for reuse. Close frees it.
type Batch struct {
	lib    *Library
	c      cBatch
	n, cap int
	nSeq   int
	token  []Token
	pos    []Pos
	nSeqID []int32
	seqID  []*SeqID
	logits []int8
}

// NewBatch allocates a batch of up to capacity tokens, each in up to nSeqMax sequences.
func (l *Library) NewBatch(capacity, nSeqMax int) *Batch {
	c := l.fn.llamaBatchInit(int32(capacity), 0, int32(nSeqMax))
	return &Batch{
		lib: l, c: c, cap: capacity, nSeq: nSeqMax,
		token:  unsafe.Slice(c.Token, capacity),
		pos:    unsafe.Slice(c.Pos, capacity),
		nSeqID: unsafe.Slice(c.NSeqID, capacity),
		seqID:  unsafe.Slice(c.SeqID, capacity),
		logits: unsafe.Slice(c.Logits, capacity),
	}
}

// Close frees the batch.
func (b *Batch) Close() {
	if b.c.Token != nil {
		b.lib.fn.llamaBatchFree(b.c)
		b.c = cBatch{}
		b.token, b.pos, b.nSeqID, b.seqID, b.logits = nil, nil, nil, nil, nil
	}
}

// Len is the number of tokens in the batch.
func (b *Batch) Len() int { return b.n }

// Cap is the most tokens the batch holds.
func (b *Batch) Cap() int { return b.cap }

// Clear empties the batch.
func (b *Batch) Clear() { b.n = 0 }

// Add appends a token at pos in the given sequences; output asks for its
// logits. It reports false if the batch is full or seqs is empty or too long.
func (b *Batch) Add(t Token, pos Pos, seqs []SeqID, output bool) bool {
	if b.n >= b.cap || len(seqs) == 0 || len(seqs) > b.nSeq {
		return false
	}
	i := b.n
	b.token[i] = t
	b.pos[i] = pos
	b.nSeqID[i] = int32(len(seqs))
	copy(unsafe.Slice(b.seqID[i], b.nSeq), seqs)
	b.logits[i] = 0
	if output {
		b.logits[i] = 1
	}
	b.n++
	return true
}
