package policies

import (
	"fmt"
	"slices"
)

// Streaming is StreamingLLM's cache: the first Start entries (attention
// sinks) and the last Recent entries are kept; everything between is
// dropped. Positions are shifted: an entry's RoPE position is its slot in
// the cache, so after an eviction the entries behind the gap move down.
//
// Tokens get original positions 0, 1, 2, ... in append order. Set Start and
// Recent before the first call; negative values count as 0 (Validate
// reports them).
type Streaming struct {
	// Start is the number of attention-sink entries kept at the front.
	Start int
	// Recent is the number of most recent entries kept.
	Recent int

	kept []int
	next int
}

// Validate reports negative sizes.
func (s *Streaming) Validate() error {
	if s.Start < 0 || s.Recent < 0 {
		return fmt.Errorf("streaming: start %d and recent %d must not be negative", s.Start, s.Recent)
	}
	return nil
}

// CacheSize returns Start+Recent.
func (s *Streaming) CacheSize() int { return max(s.Start, 0) + max(s.Recent, 0) }

// Len returns the number of cached entries.
func (s *Streaming) Len() int { return len(s.kept) }

// Kept returns a copy of the cached tokens' original positions, in cache
// order (ascending).
func (s *Streaming) Kept() []int { return slices.Clone(s.kept) }

// CachePos returns the position each cached entry has after the shift: its
// slot, 0 .. Len()-1.
func (s *Streaming) CachePos() []int { return positions(0, len(s.kept)) }

// Append adds the next n tokens at the end of the cache without evicting
// and returns the positions their queries use: their slots
// Len() .. Len()+n-1 before the call.
func (s *Streaming) Append(n int) []int {
	query := positions(len(s.kept), len(s.kept)+n)
	for range n {
		s.kept = append(s.kept, s.next)
		s.next++
	}
	return query
}

// Call is StreamingLLM's step after a forward pass: if the cache holds
// more than CacheSize entries, it keeps the first Start and the last Recent.
// It returns the evicted original positions, ascending.
func (s *Streaming) Call() []int {
	m := len(s.kept)
	if m <= s.CacheSize() {
		return nil
	}
	return s.cut(m - max(s.Recent, 0))
}

// EvictForSpace is StreamingLLM's step before c new tokens: if Len()+c
// exceeds CacheSize, it keeps the first Start entries and the entries from
// slot Len()-Recent+c on, so that the cache holds CacheSize entries after
// the c tokens are appended. When c > Recent that is not possible; the
// cache then ends above CacheSize (the paper's behaviour). It returns the
// evicted original positions, ascending.
func (s *Streaming) EvictForSpace(c int) []int {
	m := len(s.kept)
	if m+c <= s.CacheSize() {
		return nil
	}
	return s.cut(m - max(s.Recent, 0) + c)
}

// cut keeps the first Start entries and the entries from slot tail on
// (slots clamped to the cache as Python slices clamp) and returns the
// dropped positions.
func (s *Streaming) cut(tail int) []int {
	m := len(s.kept)
	head := min(max(s.Start, 0), m)
	tail = min(max(tail, head), m)
	evicted := slices.Clone(s.kept[head:tail])
	s.kept = slices.Delete(s.kept, head, tail)
	return evicted
}

// DefaultEvictEvery is StreamingLLM's eviction stride for a recent window
// of recent positions when none is given: a quarter of it, between 1 and
// 16 (docs/H2O-STREAMING.md).
func DefaultEvictEvery(recent int) int { return min(16, max(1, recent/4)) }

// streamingPolicy is StreamingLLM as a decode-time policy: Sinks first
// positions and the Recent last ones; the oldest others leave before new
// tokens come, EvictEvery at a time, and the later positions shift down
// over them.
var streamingPolicy = DecodePolicy{
	Name:    "streaming",
	Summary: "attention sinks and a recent window, positions shifted so generation runs past the context (StreamingLLM)",
	Shifts:  true,
	Check: func(o DecodeOptions) error {
		switch {
		case !o.AsPolicy && (o.Sinks < 0 || o.Recent < 1 || o.EvictEvery < 0):
			return fmt.Errorf("--decode-policy streaming needs --sinks S >= 0 and --recent R >= 1")
		case o.Sinks < 0:
			return fmt.Errorf("sinks %d: give a count >= 0", o.Sinks)
		case o.Recent < 1:
			return fmt.Errorf("streaming needs --recent N >= 1 (the recent window)")
		case o.EvictEvery < 0 || o.EvictEvery > o.Recent:
			return fmt.Errorf("evict-every %d: give between 1 and the recent window %d (0: %d)", o.EvictEvery, o.Recent, DefaultEvictEvery(o.Recent))
		}
		return nil
	},
	Fit: func(o *DecodeOptions, budget int) {
		if o.Recent == 0 {
			o.Sinks = min(4, budget/2)
			o.Recent = max(1, budget-o.Sinks)
		}
	},
	Cells: func(o DecodeOptions) int { return o.Sinks + o.Recent },
	Chunk: func(o DecodeOptions) int { return o.Recent },
	New: func(o DecodeOptions) (Evictor, error) {
		every := o.EvictEvery
		if every == 0 {
			every = DefaultEvictEvery(o.Recent)
		}
		return &streamEvictor{sinks: o.Sinks, recent: o.Recent, every: every}, nil
	},
}

// streamEvictor is StreamingLLM's cache as an Evictor. Its positions are
// always 0 .. held-1: each eviction is the run after the sinks, which the
// caller closes by shifting the later positions down.
type streamEvictor struct {
	sinks, recent, every, held int
}

func (e *streamEvictor) Start(positions []int, _ []float32) ([]int, error) {
	if len(positions) > 0 && positions[len(positions)-1] != len(positions)-1 {
		return nil, fmt.Errorf("streaming: start from positions 0..%d, not up to %d (close the gaps first)", len(positions)-1, positions[len(positions)-1])
	}
	e.held = len(positions)
	return nil, nil
}

// Room evicts the oldest positions after the sinks so that coming more
// tokens fit in sinks + recent, every of them at least (all it can when
// coming alone is more than the window).
func (e *streamEvictor) Room(coming int) []int {
	over := e.held + coming - (e.sinks + e.recent)
	if over <= 0 {
		return nil
	}
	k := min(max(over, e.every), e.held-e.sinks)
	if k <= 0 {
		return nil
	}
	e.held -= k
	return positions(e.sinks, e.sinks+k)
}

func (e *streamEvictor) Step(pos int, _ []float32) ([]int, error) {
	if pos != e.held {
		return nil, fmt.Errorf("streaming: step at position %d, the cache holds 0..%d", pos, e.held-1)
	}
	e.held++
	return nil, nil
}

func (e *streamEvictor) Kept() []int { return positions(0, e.held) }
