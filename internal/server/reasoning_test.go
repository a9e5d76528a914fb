package server

import (
	"net/http"
	"strings"
	"testing"
)

// thinkTemplate opens the reasoning in its generation prompt, as DeepSeek
// R1's and QwQ's do, and drops earlier answers' reasoning as they do.
const thinkTemplate = `{%- for m in messages -%}<|{{ m.role }}|>{{ m.content.split('</think>')[-1] }}<|end|>{%- endfor -%}` +
	`{%- if add_generation_prompt -%}<|assistant|><think>` + "\n" + `{%- endif -%}`

// TestReasoning: a thinking model's answer is split into reasoning_content
// and content (reasoning_format auto), whole and streamed, kept whole with
// none, in both with deepseek-legacy; Anthropic's answer gets a thinking
// block first. A grammar makes the tiny model write the reasoning's end.
func TestReasoning(t *testing.T) {
	cfg := testConfig()
	cfg.Jinja, cfg.ChatTemplate = true, thinkTemplate
	ts := startServer(t, cfg)
	const ask = `{"messages":[{"role":"user","content":"2+2?"}],"max_tokens":40,"grammar":"root ::= \"add two and two\" \"</think>\" \"\\n\\nfour\""`
	type answer struct {
		Choices []struct {
			Message struct {
				Content          string
				ReasoningContent *string `json:"reasoning_content"`
			}
		}
	}
	for format, want := range map[string]string{
		"":                  `add two and two|four`,
		`"auto"`:            `add two and two|four`,
		`"none"`:            `|add two and two</think>` + "\n\nfour",
		`"deepseek-legacy"`: `add two and two|add two and two</think>` + "\n\nfour",
	} {
		body := ask + `}`
		if format != "" {
			body = ask + `,"reasoning_format":` + format + `}`
		}
		var a answer
		ts.post("/v1/chat/completions", body, 200, &a)
		r := ""
		if p := a.Choices[0].Message.ReasoningContent; p != nil {
			r = *p
		}
		if got := r + "|" + a.Choices[0].Message.Content; got != want {
			t.Errorf("reasoning_format %s: %q, want %q", format, got, want)
		}
	}

	code, b := ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", ask+`,"stream":true}`)
	if code != 200 {
		t.Fatalf("streamed: %d %s", code, b)
	}
	st := readChatStream(t, b)
	reasoningText, content := st.Reasoning, st.Content
	if strings.TrimSpace(reasoningText) != "add two and two" || content != "four" {
		t.Errorf("streamed: reasoning %q, content %q", reasoningText, content)
	}

	code, b = ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", ask+`,"reasoning_format":"sometimes"}`)
	wantError(t, code, b, 400, typeInvalidRequest, "Unknown reasoning format: sometimes")

	// Anthropic: the thinking block first, whole and streamed.
	const anth = `{"max_tokens":40,"messages":[{"role":"user","content":"2+2?"}]`
	var m struct {
		Content []struct{ Type, Text, Thinking string }
	}
	ts.post("/v1/messages", anth+`}`, 200, &m)
	if len(m.Content) == 0 || m.Content[0].Type != "thinking" || m.Content[0].Thinking == "" {
		t.Errorf("Anthropic: %+v", m)
	}
	code, b = ts.do(t.Context(), http.MethodPost, "/v1/messages", anth+`,"stream":true}`)
	if code != 200 || !strings.Contains(string(b), `"thinking_delta"`) || !strings.Contains(string(b), `"content_block":{"thinking":"","type":"thinking"}`) {
		t.Errorf("Anthropic streamed: %d %s", code, b)
	}
	// Its extended thinking cannot keep a budget here.
	code, b = ts.do(t.Context(), http.MethodPost, "/v1/messages", anth+`,"thinking":{"type":"enabled","budget_tokens":50}}`)
	wantError(t, code, b, 400, typeInvalidRequest, "reasoning budget")
}

// TestThinkingVariables: enable_thinking is true by default only for a
// template whose reasoning kvtrim reads (as llama-server turns it on only
// where its chat layer finds reasoning); chat_template_kwargs and OpenAI's
// reasoning_effort set it ("none" turns it off) and reasoning_effort; the
// preserve_reasoning default (true) reaches templates under its other
// names too.
func TestThinkingVariables(t *testing.T) {
	const vars = `[{{ enable_thinking }}|{{ reasoning_effort if reasoning_effort is defined else "-" }}|{{ drop_thinking }}]`
	cfg := testConfig()
	cfg.Jinja = true
	for _, c := range []struct{ template, body, want string }{
		{vars + `<think></think>`, `{}`, "[True|-|False]"},
		{vars, `{}`, "[False|-|False]"},
		{vars + `<think></think>`, `{"reasoning_effort":"none"}`, "[False|-|False]"},
		{vars, `{"reasoning_effort":"high"}`, "[False|high|False]"},
		{vars, `{"chat_template_kwargs":{"enable_thinking":true,"preserve_reasoning":false}}`, "[True|-|True]"},
	} {
		cfg.ChatTemplate = c.template + `{%- for m in messages -%}{{ m.content }}{%- endfor -%}`
		ts := startServer(t, cfg)
		body := strings.Replace(c.body, "{", `{"messages":[{"role":"user","content":"hi"}],`, 1)
		body = strings.Replace(body, ",}", "}", 1)
		var p struct{ Prompt string }
		ts.post("/apply-template", body, 200, &p)
		if !strings.HasPrefix(p.Prompt, c.want) {
			t.Errorf("%s with %s: %q, want %s...", c.template, c.body, p.Prompt, c.want)
		}
	}
	ts := startServer(t, cfg)
	code, b := ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"chat_template_kwargs":{"enable_thinking":"yes"}}`)
	wantError(t, code, b, 400, typeInvalidRequest, `invalid type for "enable_thinking"`)
}
