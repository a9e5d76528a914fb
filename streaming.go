package kvtrim

import (
	"context"
	"fmt"
	"time"

	"github.com/kvtrim/kvtrim/hooks"
)

// Streams reports whether StreamingLLM keeps the cache while generating,
// as the policy or as the decode policy after a prompt compression.
func (c Compression) Streams() bool {
	return c.Policy == PolicyStreaming || (c.enabled() && c.DecodePolicy == PolicyStreaming)
}

// DefaultEvictEvery is the StreamingLLM eviction stride for a recent
// window of recent positions when none is given: a quarter of it, between
// 1 and 16 (docs/H2O-STREAMING.md).
func DefaultEvictEvery(recent int) int { return min(16, max(1, recent/4)) }

// closeGaps re-assigns the positions it holds, kept (ascending), to 0..k-1
// with one seq_add per run of consecutive positions, as StreamingLLM
// re-assigns positions inside its cache. The keys are re-rotated at the next
// decode.
func (s *Session) closeGaps(kept []int) {
	mem := s.ctx.Memory()
	for i := 0; i < len(kept); {
		j := i + 1
		for j < len(kept) && kept[j] == kept[j-1]+1 {
			j++
		}
		if d := kept[i] - i; d != 0 {
			mem.SeqAdd(s.seq, int32(kept[i]), int32(kept[j-1]+1), -int32(d))
		}
		i = j
	}
}

// prefillStreaming prefills a prompt under StreamingLLM: in chunks no longer
// than the recent window, making room before each one, so a prompt longer
// than the cache keeps its sinks and its last tokens.
func (s *Session) prefillStreaming(ctx context.Context, tokens []Token) error {
	c := s.opt.Compression
	chunk := min(s.be.chunk(), c.Recent)
	for i := 0; i < len(tokens); i += chunk {
		part := tokens[i:min(i+chunk, len(tokens))]
		if err := s.streamMakeRoom(len(part)); err != nil {
			return err
		}
		if err := s.decode(ctx, s.ctx, nil, part, len(tokens)); err != nil {
			return err
		}
	}
	s.recordHeld(len(tokens))
	s.stats.NKVBefore, s.stats.NKVAfter = hooks.PadNKV(min(len(tokens), s.NCtx())), hooks.PadNKV(s.used)
	return nil
}

// streamMakeRoom evicts the oldest positions after the sinks so that
// coming more tokens fit in sinks + recent, and shifts the later positions
// down over the gap (StreamingLLM's position re-assignment). With
// EvictEvery > coming it evicts that many at once.
func (s *Session) streamMakeRoom(coming int) error {
	c := s.opt.Compression
	over := s.used + coming - (c.Sinks + c.Recent)
	if over <= 0 {
		return nil
	}
	k := min(max(over, c.EvictEvery), s.used-c.Sinks)
	if k <= 0 {
		return nil
	}
	t0 := time.Now()
	p0, p1 := int32(c.Sinks), int32(c.Sinks+k)
	removed := true
	var last int32
	s.withCtx(func() {
		mem := s.ctx.Memory()
		if removed = mem.SeqRm(s.seq, p0, p1); removed {
			mem.SeqAdd(s.seq, p1, -1, -int32(k))
			last = mem.SeqPosMax(s.seq)
		}
	})
	if !removed {
		return fmt.Errorf("streaming: llama.cpp refused to evict positions [%d, %d)", p0, p1)
	}
	s.used -= k
	s.nextPos -= int32(k)
	if last != s.nextPos-1 {
		return fmt.Errorf("streaming: after the shift llama.cpp's last position is %d, kvtrim expected %d", last, s.nextPos-1)
	}
	s.stats.EvictedCells += k
	s.stats.EvictMs += msSince(t0)
	return nil
}
