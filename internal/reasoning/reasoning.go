// Package reasoning splits a thinking model's answer into its reasoning
// and its content, as llama-server's reasoning_format "auto" and
// "deepseek" do: the text between the model family's start and end tags
// (<think>...</think>, Command R7B's <|START_THINKING|>...<|END_THINKING|>,
// Gemma 4's <|channel>thought...<channel|>)
// is reasoning, the rest content. The prompt may have opened the
// reasoning already (DeepSeek R1's and QwQ's templates end with <think>),
// in which case the answer begins inside it.
package reasoning

import "strings"

// Tags are a model family's reasoning markers.
type Tags struct {
	Start, End string
}

// known are the tags Detect looks for, in this order.
var known = []Tags{
	{"<think>", "</think>"},
	{"<|START_THINKING|>", "<|END_THINKING|>"},
	{"<|channel>thought", "<channel|>"}, // Gemma 4
}

// Detect finds the reasoning tags a chat template writes, or nil for a
// template without reasoning.
func Detect(template string) *Tags {
	for _, t := range known {
		if strings.Contains(template, t.Start) && strings.Contains(template, t.End) {
			return &t
		}
	}
	return nil
}

// Opened says whether a rendered prompt ends inside the reasoning: its
// last tag, less trailing whitespace, is the start tag.
func (t *Tags) Opened(prompt string) bool {
	return strings.HasSuffix(strings.TrimRight(prompt, " \t\r\n"), t.Start)
}

// Split splits a whole answer into reasoning and content. With open the
// answer begins inside the reasoning; otherwise reasoning is read only
// when the answer starts with the start tag. Reasoning that never ends is
// all reasoning, as llama.cpp reads it.
func (t *Tags) Split(text string, open bool) (reasoning, content string) {
	s := t.NewStream(open)
	r1, c1 := s.Write(text)
	r2, c2 := s.Finish()
	return strings.TrimSpace(r1 + r2), c1 + c2
}

// Stream splits an answer as it comes. Write returns the reasoning and
// content that may be sent now; a piece that may be the beginning of a
// tag is held back until the next Write or Finish.
type Stream struct {
	t *Tags
	// state: before (the answer may still open the reasoning), inside,
	// after (everything is content).
	state   int
	pending string // text held back: a possible tag, or leading space
	lead    bool   // content after the end tag: its leading space is trimmed
}

const (
	before = iota
	inside
	after
)

// NewStream starts splitting an answer; open says the prompt opened the
// reasoning.
func (t *Tags) NewStream(open bool) *Stream {
	s := &Stream{t: t}
	if open {
		s.state = inside
	}
	return s
}

// Write adds a piece of the answer.
func (s *Stream) Write(piece string) (reasoning, content string) {
	text := s.pending + piece
	s.pending = ""
	for text != "" {
		switch s.state {
		case before:
			lead := strings.TrimLeft(text, " \t\r\n")
			switch {
			case strings.HasPrefix(lead, s.t.Start):
				text = lead[len(s.t.Start):]
				s.state = inside
			case strings.HasPrefix(s.t.Start, lead):
				s.pending = text // may still be the start tag
				return reasoning, content
			default:
				s.state = after
			}
		case inside:
			if i := strings.Index(text, s.t.End); i >= 0 {
				reasoning += text[:i]
				text = text[i+len(s.t.End):]
				s.state, s.lead = after, true
				continue
			}
			keep := partialSuffix(text, s.t.End)
			reasoning += text[:len(text)-keep]
			s.pending = text[len(text)-keep:]
			return reasoning, content
		case after:
			if s.lead {
				text = strings.TrimLeft(text, " \t\r\n")
				if text == "" {
					return reasoning, content
				}
				s.lead = false
			}
			content += text
			text = ""
		}
	}
	return reasoning, content
}

// Finish gives out what was held back: reasoning if the answer ended
// inside it, else content.
func (s *Stream) Finish() (reasoning, content string) {
	rest := s.pending
	s.pending = ""
	if s.state == inside {
		return rest, ""
	}
	return "", rest
}

// partialSuffix is the length of the longest tail of text that begins
// tag without being all of it.
func partialSuffix(text, tag string) int {
	for k := min(len(tag)-1, len(text)); k > 0; k-- {
		if strings.HasSuffix(text, tag[:k]) {
			return k
		}
	}
	return 0
}
