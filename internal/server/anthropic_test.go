package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestAnthropicMessages: POST /v1/messages answers as llama-server's
// Messages endpoint: the same text as the equivalent chat request, in a
// message with text blocks, Anthropic's stop reasons and usage, and no
// timings; streamed, the named events in order; count_tokens counts the
// rendered prompt. Blocks and fields kvtrim cannot honour get a 400.
func TestAnthropicMessages(t *testing.T) {
	ts := startServer(t, testConfig())
	const conv = `"system":[{"type":"text","text":"You tell stories."}],"messages":[{"role":"user","content":[{"type":"text","text":"Once upon"},{"type":"text","text":" a time"}]}]`
	code, b := ts.do(t.Context(), http.MethodPost, "/v1/messages", `{"model":"x","max_tokens":12,"temperature":0,"metadata":{"user_id":"u"},`+conv+`}`)
	var msg struct {
		Type, Role   string
		Content      []map[string]string
		StopReason   string  `json:"stop_reason"`
		StopSequence *string `json:"stop_sequence"`
		Usage        map[string]int
		Timings      any
	}
	if err := json.Unmarshal(b, &msg); code != 200 || err != nil {
		t.Fatalf("%d %s %v", code, b, err)
	}
	code, cb := ts.do(t.Context(), http.MethodPost, "/v1/chat/completions",
		`{"max_tokens":12,"temperature":0,"messages":[{"role":"system","content":"You tell stories."},{"role":"user","content":"Once upon\n a time"}]}`)
	var chat struct {
		Choices []struct {
			Message struct{ Content string }
		}
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		}
	}
	if err := json.Unmarshal(cb, &chat); code != 200 || err != nil {
		t.Fatalf("chat: %d %s %v", code, cb, err)
	}
	if msg.Type != "message" || msg.Role != "assistant" || len(msg.Content) != 1 || msg.Content[0]["type"] != "text" ||
		msg.Content[0]["text"] != chat.Choices[0].Message.Content || msg.StopReason != "max_tokens" || msg.StopSequence != nil ||
		msg.Usage["output_tokens"] != 12 || msg.Usage["input_tokens"]+msg.Usage["cache_read_input_tokens"] != chat.Usage.PromptTokens || msg.Timings != nil {
		t.Errorf("message %s, chat %s", b, cb)
	}

	code, b = ts.do(t.Context(), http.MethodPost, "/v1/messages", `{"max_tokens":6,"stream":true,`+conv+`}`)
	if code != 200 {
		t.Fatalf("stream: %d %s", code, b)
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "event: "); ok {
			names = append(names, name)
		}
	}
	want := "message_start content_block_start content_block_delta"
	if got := strings.Join(names, " "); !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "content_block_stop message_delta message_stop") {
		t.Errorf("stream events %q", got)
	}

	code, b = ts.do(t.Context(), http.MethodPost, "/v1/messages/count_tokens", `{`+conv+`}`)
	var count map[string]int
	if err := json.Unmarshal(b, &count); code != 200 || err != nil || count["input_tokens"] != chat.Usage.PromptTokens || len(count) != 1 {
		t.Errorf("count_tokens: %d %s, want %d", code, b, chat.Usage.PromptTokens)
	}

	code, b = ts.do(t.Context(), http.MethodPost, "/v1/chat/completions/input_tokens",
		`{"messages":[{"role":"system","content":"You tell stories."},{"role":"user","content":"Once upon\n a time"}]}`)
	var chatCount struct {
		InputTokens int    `json:"input_tokens"`
		Object      string `json:"object"` // llama-server's OpenAI forms say it
	}
	if err := json.Unmarshal(b, &chatCount); code != 200 || err != nil || chatCount.InputTokens != chat.Usage.PromptTokens || chatCount.Object != "response.input_tokens" {
		t.Errorf("chat input_tokens: %d %s, want %d", code, b, chat.Usage.PromptTokens)
	}
	if code, b = ts.do(t.Context(), http.MethodPost, "/v1/messages", `{"max_tokens":4,"messages":[]}`); code != 200 {
		t.Errorf("empty messages: %d %s", code, b)
	}
	for _, c := range []struct{ body, msg string }{
		{`{"max_tokens":4}`, `"messages" is required`},
		{`{"messages":[{"role":"user","content":[{"type":"image","source":{}}]}]}`, `"image" blocks are not supported`},
		{`{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"x"}]}]}`, `"tool_result" blocks`},
		{`{"thinking":{"type":"enabled","budget_tokens":50},"messages":[{"role":"user","content":"hi"}]}`, `"thinking"`},
		{`{"tools":[{"name":"f","input_schema":{}}],"messages":[{"role":"user","content":"hi"}]}`, `"tools"`},
		{`{"messages":[{"role":"user","content":7}]}`, "content"},
	} {
		code, b := ts.do(t.Context(), http.MethodPost, "/v1/messages", c.body)
		wantError(t, code, b, 400, typeInvalidRequest, c.msg)
	}
}
