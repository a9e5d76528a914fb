package server

import (
	"github.com/kvtrim/kvtrim/internal/reasoning"
)

// Reasoning formats, as llama-server names them.
const (
	reasoningAuto     = "auto"
	reasoningDeepseek = "deepseek"
	reasoningLegacy   = "deepseek-legacy"
	reasoningNone     = "none"
)

// ReasoningFormatKnown says whether llama-server knows the reasoning
// format name ("" is the default, auto).
func ReasoningFormatKnown(name string) bool {
	switch name {
	case "", reasoningAuto, reasoningDeepseek, reasoningLegacy, reasoningNone:
		return true
	}
	return false
}

// reasoningUse is how a chat answer's reasoning is read: the template's
// tags, whether the prompt opened the reasoning, and whether the content
// keeps it too (deepseek-legacy). A nil *reasoningUse reads none.
type reasoningUse struct {
	tags   *reasoning.Tags
	open   bool
	legacy bool
}

// prepareReasoning decides how a chat request's answer is split, once its
// prompt is rendered. Anthropic's extended thinking, with its budget, is
// refused for a model that reasons: kvtrim serve has no reasoning budget.
func (e *engine) prepareReasoning(req *Request) error {
	if req.Chat.Thinking && e.reasoningTags != nil {
		return badRequest(`"thinking": kvtrim serve has no reasoning budget yet, so budget_tokens cannot be kept; leave "thinking" out and the model reasons as its template lets it`)
	}
	format := req.ReasoningFormat
	if format == "" {
		format = e.reasoningFormat
	}
	if e.reasoningTags == nil || format == reasoningNone {
		return nil
	}
	req.reasoning = &reasoningUse{tags: e.reasoningTags, open: e.reasoningTags.Opened(req.Prompt), legacy: format == reasoningLegacy}
	return nil
}

// split splits a whole answer into reasoning and content.
func (u *reasoningUse) split(text string) (reasoningText, content string) {
	if u == nil {
		return "", text
	}
	r, c := u.tags.Split(text, u.open)
	if u.legacy {
		c = text
	}
	return r, c
}

// reasoningStream splits a streamed answer; nil without reasoning.
type reasoningStream struct {
	u *reasoningUse
	s *reasoning.Stream
}

func (u *reasoningUse) stream() *reasoningStream {
	if u == nil {
		return nil
	}
	return &reasoningStream{u: u, s: u.tags.NewStream(u.open)}
}

// write splits a piece: the reasoning and content to send now.
func (r *reasoningStream) write(piece string) (reasoningText, content string) {
	if r == nil {
		return "", piece
	}
	rs, cs := r.s.Write(piece)
	if r.u.legacy {
		cs = piece
	}
	return rs, cs
}

// finish gives out what the stream held back.
func (r *reasoningStream) finish() (reasoningText, content string) {
	if r == nil {
		return "", ""
	}
	rs, cs := r.s.Finish()
	if r.u.legacy {
		cs = ""
	}
	return rs, cs
}
