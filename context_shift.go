package kvtrim

import "fmt"

// ContextShift is llama-server's --context-shift: when generation fills
// the sequence's cells, drop Discard cells after the first Keep and shift
// the later ones down over the gap, so that generation goes on past the
// context. Discard 0 drops half of what follows Keep, llama-server's
// default.
type ContextShift struct {
	Keep, Discard int
	// Shifted, if set, hears of each shift: the cells [keep, keep+discard)
	// of those held, in position order, went. A caller that tracks what
	// the cache holds (a server slot's tokens) drops the same.
	Shifted func(keep, discard int)
}

// shiftContext makes room as llama-server's context shift does, when the
// next token would take the last free cell. It reports whether it
// shifted: it does not when the cache holds positions with gaps (a
// compressed prompt), whose cells no longer line up with positions;
// generation then stops at the full cache.
func (s *Session) shiftContext(c ContextShift) (bool, error) {
	n := s.used
	if n+1 < s.NCtx() || n != int(s.nextPos) {
		return false, nil
	}
	keep := min(max(c.Keep, 0), s.NCtx()-4)
	left := n - keep
	discard := c.Discard
	if discard <= 0 {
		discard = left / 2
	}
	discard = min(discard, max(0, left-1))
	if discard == 0 {
		return false, nil
	}
	var last int32
	var err error
	s.withCtx(func() { last, err = s.sequence().Cut(int32(keep), int32(keep+discard)) })
	if err != nil {
		return false, fmt.Errorf("context shift: %w", err)
	}
	s.used -= discard
	s.nextPos -= int32(discard)
	if last != s.nextPos-1 {
		return false, fmt.Errorf("context shift: after the shift llama.cpp's last position is %d, kvtrim expected %d", last, s.nextPos-1)
	}
	s.stats.ContextShifts++
	if c.Shifted != nil {
		c.Shifted(keep, discard)
	}
	return true, nil
}
