package server

import (
	"encoding/json"
	"fmt"
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
	// As llama-server without a multimodal projector: a 500 naming it.
	code, b = ts.do(t.Context(), http.MethodPost, "/v1/messages", `{"messages":[{"role":"user","content":[{"type":"image","source":{}},{"type":"text","text":"What is this?"}]}]}`)
	wantError(t, code, b, 500, typeServer, "image input is not supported")
	for _, c := range []struct{ body, msg string }{
		{`{"max_tokens":4}`, `"messages" is required`},
		{`{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"x"}]}]}`, `need a Jinja chat template`},
		{`{"tools":[{"name":"f","input_schema":{}}],"messages":[{"role":"user","content":"hi"}]}`, `requires --jinja`},
		{`{"tool_choice":{"type":"maybe"},"messages":[{"role":"user","content":"hi"}]}`, `tool_choice`},
		{`{"messages":[{"role":"user","content":7}]}`, "content"},
	} {
		code, b := ts.do(t.Context(), http.MethodPost, "/v1/messages", c.body)
		wantError(t, code, b, 400, typeInvalidRequest, c.msg)
	}
}

// TestAnthropicTools: Anthropic's tools and tool_choice become OpenAI's, a
// forced call comes back as a tool_use block (whole, and streamed as a
// block of its own after the text's, its input as one JSON delta), the
// round trip's tool_use and tool_result blocks reach the template, and
// extended thinking is answered by a model whose template does not
// reason, refused by one whose does (its budget cannot be kept).
func TestAnthropicTools(t *testing.T) {
	cfg := testConfig()
	cfg.Jinja, cfg.ChatTemplate = true, hermesTemplate
	ts := startServer(t, cfg)
	const tools = `"tools":[{"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"city":{"type":"string","maxLength":8}},"required":["city"]}}]`
	var m struct {
		Content []struct {
			Type, Text, ID, Name string
			Input                map[string]any
		}
		StopReason string `json:"stop_reason"`
	}
	ts.post("/v1/messages", `{"max_tokens":200,"temperature":0,`+tools+`,"tool_choice":{"type":"tool","name":"get_weather"},"messages":[{"role":"user","content":"Weather in Paris?"}]}`, 200, &m)
	last := len(m.Content) - 1
	if last < 0 || m.Content[last].Type != "tool_use" || m.Content[last].Name != "get_weather" || !strings.HasPrefix(m.Content[last].ID, "toolu_") ||
		m.Content[last].Input["city"] == nil || m.StopReason != "tool_use" {
		t.Errorf("forced call: %+v", m)
	}

	code, b := ts.do(t.Context(), http.MethodPost, "/v1/messages", `{"max_tokens":200,"temperature":0,"stream":true,`+tools+`,"tool_choice":{"type":"any"},"messages":[{"role":"user","content":"Weather in Paris?"}]}`)
	if code != 200 {
		t.Fatalf("streamed: %d %s", code, b)
	}
	var starts, stops []int
	input, reason := "", ""
	for _, line := range strings.Split(string(b), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var ev struct {
			Type         string
			Index        int
			ContentBlock struct{ Type, Name string } `json:"content_block"`
			Delta        struct {
				Type        string
				PartialJSON string `json:"partial_json"`
				StopReason  string `json:"stop_reason"`
			}
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatal(err)
		}
		switch ev.Type {
		case "content_block_start":
			starts = append(starts, ev.Index)
		case "content_block_stop":
			stops = append(stops, ev.Index)
		case "content_block_delta":
			if ev.Delta.Type == "input_json_delta" {
				input += ev.Delta.PartialJSON
			}
		case "message_delta":
			reason = ev.Delta.StopReason
		}
	}
	var args map[string]any
	if fmt.Sprint(starts) != "[0 1]" || fmt.Sprint(stops) != "[0 1]" || json.Unmarshal([]byte(input), &args) != nil || args["city"] == nil || reason != "tool_use" {
		t.Errorf("streamed call: starts %v stops %v input %q reason %q", starts, stops, input, reason)
	}

	ts.post("/v1/messages", `{"max_tokens":8,"messages":[{"role":"user","content":"Weather?"},`+
		`{"role":"assistant","content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},`+
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"sunny"}]},{"type":"text","text":"And tomorrow?"}]}]}`, 200, &m)
	var n struct {
		InputTokens int `json:"input_tokens"`
	}
	ts.post("/v1/messages/count_tokens", `{"messages":[{"role":"user","content":"Weather?"},`+
		`{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},`+
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"sunny"}]}]}`, 200, &n)
	want, _ := ts.model.Vocab().Tokenize(`<|user|>Weather?<|end|><|assistant|><tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call><|end|><|tool|>sunny<tool_response>toolu_1</tool_response><|end|><|assistant|>`, true, true)
	if n.InputTokens != len(want) {
		t.Errorf("the round trip's prompt has %d tokens, want %d", n.InputTokens, len(want))
	}

	ts.post("/v1/messages", `{"max_tokens":4,"thinking":{"type":"enabled","budget_tokens":50},"messages":[{"role":"user","content":"hi"}]}`, 200, &m)
	cfg.ChatTemplate = thinkTemplate
	ts = startServer(t, cfg)
	code, b = ts.do(t.Context(), http.MethodPost, "/v1/messages", `{"max_tokens":4,"thinking":{"type":"enabled","budget_tokens":50},"messages":[{"role":"user","content":"hi"}]}`)
	wantError(t, code, b, 400, typeInvalidRequest, "reasoning budget")
}
