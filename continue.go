package kvtrim

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	"github.com/kvtrim/kvtrim/hooks"
)

// Position is the position the next token will take: how many tokens the
// session has been given and has decoded (prompt and generated), evicted
// ones included.
func (s *Session) Position() int { return int(s.nextPos) }

// Held is the number of cells the sequence holds: Position less what
// compression evicted.
func (s *Session) Held() int { return s.used }

// Truncate forgets the positions from n on, so that the next Append
// continues after the first n tokens: a new prompt that shares a prefix
// with what the session holds needs only its rest decoded. Only a session
// that has evicted nothing can be cut inside what it holds (a compressed
// one holds a subset of its positions, whose meaning ends with the whole
// sequence); for it, n must be its Position.
func (s *Session) Truncate(n int) error {
	switch {
	case n < 0 || n > int(s.nextPos):
		return fmt.Errorf("truncate to %d tokens: the session holds positions up to %d", n, s.nextPos)
	case n == int(s.nextPos):
		return nil
	case s.stats.EvictedCells > 0 || s.opt.Compression.EvictsWhileDecoding():
		return fmt.Errorf("truncate to %d tokens: the session's cache is compressed, so only its whole sequence (%d tokens) can be continued", n, s.nextPos)
	}
	removed := false
	s.withCtx(func() { removed = s.ctx.Memory().SeqRm(s.seq, int32(n), -1) })
	if !removed {
		return fmt.Errorf("truncate to %d tokens: llama.cpp refused to remove positions %d and later", n, n)
	}
	s.nextPos, s.used, s.haveLogits = int32(n), n, false
	return nil
}

// Append decodes tokens after what the cache holds, without compressing
// them, and asks for the logits of the last: the next turn of a
// conversation whose earlier turns are cached, compressed or not. Policies
// that evict while generating (decode-time ones) do not append.
func (s *Session) Append(ctx context.Context, tokens []Token) error {
	switch {
	case len(tokens) == 0:
		return errors.New("append: no tokens")
	case !s.opt.Compression.Appendable():
		return fmt.Errorf("append: a %s session evicts while it decodes; reset it and prefill the whole prompt", s.opt.Compression.Policy)
	case s.used+len(tokens) > s.NCtx():
		return fmt.Errorf("%w: %d cached and %d new tokens do not fit in a context of %d cells (-c)", ErrPromptTooLong, s.used, len(tokens), s.NCtx())
	}
	runtime.LockOSThread() // see Prefill
	defer runtime.UnlockOSThread()
	if err := s.decode(ctx, s.ctx, nil, tokens, len(tokens)); err != nil {
		return err
	}
	// What the cache now holds for the whole sequence, against what it
	// would hold uncompressed; this call evicted nothing.
	s.recordHeld(int(s.nextPos))
	s.stats.NKVBefore, s.stats.NKVAfter = hooks.PadNKV(int(s.nextPos)), hooks.PadNKV(s.used)
	return nil
}

// ResetStats zeroes the counters and timings (the configuration stays), so
// that the next request on a reused session reports only its own.
func (s *Session) ResetStats() { s.stats = s.freshStats() }

// CachedPositions is the first and the last position the session's
// sequence holds in llama.cpp's cache (-1, -1 when none). After a prefill
// or a generation, last is Position-1: anything else means cells the
// session does not account for.
func (s *Session) CachedPositions() (first, last int) {
	s.withCtx(func() {
		mem := s.ctx.Memory()
		first, last = int(mem.SeqPosMin(s.seq)), int(mem.SeqPosMax(s.seq))
	})
	return first, last
}

// Snapshot is a copy, in host memory, of what a session's cache holds:
// its sequence's cells (llama_state_seq_get_data) and where the session
// stood. A server keeps snapshots of prompts a slot gives up, and puts
// one back into a slot whose next prompt continues it (llama-server's
// --cache-ram prompt cache).
type Snapshot struct {
	state       []byte
	compression Compression
	nextPos     int32
	used        int
	evicted     int
}

// Bytes is the snapshot's size in host memory.
func (sn *Snapshot) Bytes() int { return len(sn.state) }

// Compression is the compression of the session the snapshot was taken
// from; only a session with the same one can restore it.
func (sn *Snapshot) Compression() Compression { return sn.compression }

// Snapshot copies what the session's cache holds. Only a session that can
// Append can be snapshotted: H2O and StreamingLLM keep state beyond the
// cells (scores, shifted positions) that a copy of the cells does not
// carry.
func (s *Session) Snapshot() (*Snapshot, error) { return s.SnapshotWith(nil) }

// SnapshotWith is Snapshot holding the copy in memory from alloc, which
// is given the copy's length and returns a slice of that length, or nil
// when it has no room (then SnapshotWith fails). It is called with the
// context held, so it should not wait. The memory is the caller's: it
// must stay unchanged while the snapshot is in use, and is the caller's to
// free after. A nil alloc allocates on Go's heap, as Snapshot does.
func (s *Session) SnapshotWith(alloc func(n int) []byte) (*Snapshot, error) {
	switch {
	case !s.opt.Compression.Appendable():
		return nil, fmt.Errorf("snapshot: a %s session evicts while it decodes; its cells alone cannot be continued", s.opt.Compression.Policy)
	case s.used == 0:
		return nil, errors.New("snapshot: the session's cache is empty")
	}
	var state []byte
	var err error
	s.withCtx(func() { state, err = s.ctx.SeqStateWith(s.seq, 0, alloc) })
	if err != nil {
		return nil, fmt.Errorf("snapshot %d cells: %w", s.used, err)
	}
	return &Snapshot{state: state, compression: s.opt.Compression, nextPos: s.nextPos, used: s.used, evicted: s.stats.EvictedCells}, nil
}

// Restore empties the session's cache and loads sn into it, so that the
// session continues (Truncate, Append) as the one sn was taken from would.
// The session's compression must be sn's.
func (s *Session) Restore(sn *Snapshot) error {
	switch {
	case !s.opt.Compression.Appendable():
		return fmt.Errorf("restore: a %s session evicts while it decodes; it cannot continue a snapshot", s.opt.Compression.Policy)
	case sn.compression != s.opt.Compression:
		return errors.New("restore: the snapshot was taken from a session with another compression")
	case sn.used > s.NCtx():
		return fmt.Errorf("restore: the snapshot holds %d cells, the session has room for %d", sn.used, s.NCtx())
	}
	s.Reset()
	var err error
	s.withCtx(func() {
		if err = s.ctx.SetSeqState(s.seq, sn.state, 0); err != nil {
			s.ctx.Memory().SeqRm(s.seq, -1, -1) // nothing half-loaded stays
		}
	})
	if err != nil {
		return fmt.Errorf("restore %d cells: %w", sn.used, err)
	}
	s.nextPos, s.used = sn.nextPos, sn.used
	s.stats.EvictedCells = sn.evicted
	return nil
}

// Plain reports whether the cache holds positions 0 to Position()-1 with
// nothing compressed: what llama.cpp's sequence state files carry.
func (s *Session) Plain() bool {
	return !s.opt.Compression.Evicts() && s.opt.Compression.Appendable() && s.stats.EvictedCells == 0 && s.used == int(s.nextPos)
}

// SaveLlamaFile writes the session's cells to path as
// llama_state_seq_save_file does, with payload beside them: a file
// llama-server restores (its slot saves store their tokens there). Only a
// plain session (Plain) can be saved so; Snapshot and WriteSnapshot carry
// a compressed one.
func (s *Session) SaveLlamaFile(path string, payload []Token) (int64, error) {
	switch {
	case !s.Plain():
		return 0, errors.New("save as a llama.cpp sequence file: the cache is compressed, which that format cannot carry")
	case s.used == 0:
		return 0, errors.New("save as a llama.cpp sequence file: the session's cache is empty")
	}
	var n int64
	var err error
	s.withCtx(func() { n, err = s.ctx.SaveSeqFile(path, s.seq, payload) })
	return n, err
}

// RestoreLlamaFile empties the cache and loads a llama.cpp sequence state
// file into it (llama-server's slot saves, or SaveLlamaFile's), returning
// the tokens stored beside the cells (at most maxPayload) and the bytes
// read (at most maxBytes). The cells must hold positions 0 to n-1, as a sequence without
// compression does; the session then continues after them (Append). Its
// compression must evict nothing.
func (s *Session) RestoreLlamaFile(path string, maxPayload int, maxBytes int64) ([]Token, int64, error) {
	if s.opt.Compression.Evicts() || !s.opt.Compression.Appendable() {
		return nil, 0, fmt.Errorf("restore %s: it holds a plain sequence, which a %s session cannot continue", path, s.opt.Compression.PolicyName())
	}
	s.Reset()
	var payload []Token
	var n int64
	var pos []int32
	var err error
	s.withCtx(func() {
		payload, n, err = s.ctx.LoadSeqFile(path, s.seq, maxPayload, maxBytes)
		if err == nil {
			var state []byte
			if state, err = s.ctx.SeqState(s.seq, 0); err == nil {
				pos, err = hooks.StatePositions(state, int32(s.seq))
			}
		}
		for i, p := range pos {
			if err == nil && int(p) != i {
				err = fmt.Errorf("cell %d holds position %d; kvtrim restores sequences of positions 0 to n-1", i, p)
			}
		}
		if err == nil && len(pos) > s.NCtx() {
			err = fmt.Errorf("%d cells, more than the session's %d", len(pos), s.NCtx())
		}
		if err != nil {
			s.ctx.Memory().SeqRm(s.seq, -1, -1) // nothing half-loaded stays
		}
	})
	if err != nil {
		return nil, 0, fmt.Errorf("restore %s: %w", path, err)
	}
	s.nextPos, s.used = int32(len(pos)), len(pos)
	return payload, n, nil
}
