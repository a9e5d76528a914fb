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
