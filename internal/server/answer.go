package server

import "github.com/kvtrim/kvtrim/internal/toolcall"

// splitAnswer splits a whole chat answer as its request reads it: the
// reasoning out first (a template that reasons), then the tool calls out
// of the content (a request that offers tools). An answer whose calls do
// not read (a call it never closed) keeps its content as written.
func splitAnswer(req *Request, text string) (reasoningText, content string, calls []toolcall.Call) {
	reasoningText, content = req.reasoning.split(text)
	if f := req.ToolUse.format; f != nil {
		if c, cs, err := f.Parse(content); err == nil && len(cs) > 0 {
			content, calls = c, cs
		}
	}
	return reasoningText, content, calls
}

// answerStream splits a streamed chat answer as splitAnswer splits a
// whole one: each piece's reasoning and the content that may go out now,
// holding back what may be a tool call until finish.
type answerStream struct {
	think *reasoningStream
	calls *toolcall.Stream
}

// newAnswerStream starts splitting req's answer; make it at the first
// piece, once the chat is rendered.
func newAnswerStream(req *Request) *answerStream {
	a := &answerStream{think: req.reasoning.stream()}
	if f := req.ToolUse.format; f != nil {
		a.calls = f.NewStream()
	}
	return a
}

// write splits a piece: the reasoning and the content to send now.
func (a *answerStream) write(piece string) (reasoningText, content string) {
	reasoningText, content = a.think.write(piece)
	if a.calls != nil {
		content = a.calls.Write(content)
	}
	return reasoningText, content
}

// finish gives out what was held back: reasoning, content and the calls
// read. A call the answer never closed comes back as the text written.
func (a *answerStream) finish() (reasoningText, content string, calls []toolcall.Call) {
	reasoningText, content = a.think.finish()
	if a.calls == nil {
		return reasoningText, content, nil
	}
	content = a.calls.Write(content)
	rest, calls, err := a.calls.Finish()
	if err != nil {
		rest, calls = a.calls.Held(), nil
	}
	return reasoningText, content + rest, calls
}
