package toolcall

import (
	"strings"
	"testing"
)

// FuzzParse: every format reads any answer without panicking, and a
// stream split at any point gives the content it sends plus what it holds
// back, which is the answer whole when no call is read.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"Let me look.<tool_call>{\"name\":\"a\",\"arguments\":{}}</tool_call>",
		"{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\"",
		"[TOOL_CALLS][{\"name\":\"x\",\"arguments\":\"{\\\"y\\\":1}\"}]",
		"[TOOL_CALLS]f[ARGS]{\"a\":1}[TOOL_CALLS]g",
		"<function=f>{\"a\":1}</function><function=g>",
		"<tool_call>\n<function=f>\n<parameter=p>\n1\n</parameter>\n</function>\n</tool_call>",
		"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{}\n```<｜tool▁call▁end｜>",
		"plain text <tool", "",
	} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, text string, cut int) {
		for _, format := range formats {
			_, _, _ = format.Parse(text)
			s := format.NewStream()
			cut := min(max(cut, 0), len(text))
			sent := s.Write(text[:cut]) + s.Write(text[cut:])
			rest, calls, err := s.Finish()
			if err == nil && len(calls) == 0 && sent+rest != text {
				t.Errorf("%s: %q streamed as %q + %q", format.Name, text, sent, rest)
			}
			if !strings.HasPrefix(text, sent) {
				t.Errorf("%s: %q sent %q, not its beginning", format.Name, text, sent)
			}
		}
	})
}
