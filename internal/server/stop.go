package server

import (
	"strings"
	"unicode/utf8"
)

// stopMatcher collects generated text, finds stop strings in it, and says
// how much of it can be sent to a streaming client: never a tail that may
// still become a stop string, nor a UTF-8 character cut in the middle.
type stopMatcher struct {
	stops []string
	text  string
	sent  int    // bytes of text already released
	word  string // the stop string found, if any
}

func newStopMatcher(stops []string) *stopMatcher { return &stopMatcher{stops: stops} }

// add appends a piece of generated text and returns the text that can be
// released now, and whether a stop string has appeared (the text is then
// cut just before it).
func (m *stopMatcher) add(piece string) (delta string, stopped bool) {
	m.text += piece
	if at, word := m.find(); at >= 0 {
		m.word = word
		m.text = m.text[:at]
		delta = m.text[m.sent:]
		m.sent = len(m.text)
		return delta, true
	}
	release := len(m.text) - max(m.partialStop(), incompleteUTF8(m.text))
	if release <= m.sent {
		return "", false
	}
	delta = m.text[m.sent:release]
	m.sent = release
	return delta, false
}

// flush releases whatever was held back, at the end of generation.
func (m *stopMatcher) flush() string {
	delta := m.text[m.sent:]
	m.sent = len(m.text)
	return delta
}

// content is the whole text, cut before the stop string if one was found.
func (m *stopMatcher) content() string { return m.text }

// find returns where the earliest stop string starts in the unreleased
// text, and which, or -1. A stop string never starts in released text,
// since its beginning would have been held back.
func (m *stopMatcher) find() (int, string) {
	best, word := -1, ""
	tail := m.text[m.sent:]
	for _, s := range m.stops {
		if i := strings.Index(tail, s); i >= 0 && (best < 0 || i < best) {
			best, word = i, s
		}
	}
	if best < 0 {
		return -1, ""
	}
	return m.sent + best, word
}

// partialStop is the length of the longest end of the text that is the
// beginning of a stop string (and may become one with the next pieces).
func (m *stopMatcher) partialStop() int {
	longest := 0
	for _, s := range m.stops {
		for k := min(len(s)-1, len(m.text)); k > longest; k-- {
			if strings.HasSuffix(m.text, s[:k]) {
				longest = k
				break
			}
		}
	}
	return longest
}

// incompleteUTF8 is the number of bytes at the end of s that begin a UTF-8
// character whose remaining bytes have not come yet.
func incompleteUTF8(s string) int {
	for i := len(s) - 1; i >= 0 && i >= len(s)-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			if !utf8.FullRuneInString(s[i:]) {
				return len(s) - i
			}
			return 0
		}
	}
	return 0
}
