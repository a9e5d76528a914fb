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
	return c.Policy == PolicyStreaming || c.decodePolicy() == PolicyStreaming
}

// DefaultEvictEvery is the StreamingLLM eviction stride for a recent
// window of recent positions when none is given: a quarter of it, between
// 1 and 16 (docs/H2O-STREAMING.md).
func DefaultEvictEvery(recent int) int { return min(16, max(1, recent/4)) }

// sequence is the session's sequence in its context, without a cell map:
// StreamingLLM's evictions and shifts go through it.
func (s *Session) sequence() hooks.Sequence {
	return hooks.Sequence{Mem: s.ctx.Memory(), ID: s.seq}
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
	var last int32
	var err error
	s.withCtx(func() { last, err = s.sequence().Cut(p0, p1) })
	if err != nil {
		return fmt.Errorf("streaming: %w", err)
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
