package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestResponsesAPI: POST /v1/responses answers as llama-server does. The
// whole answer is a response object whose message holds the same text as
// the same conversation sent as a chat completion (temperature 0). The
// stream's named events run response.created, response.in_progress,
// the message's item and part, the text deltas (whose sum is the text),
// the items' done events and response.completed with the usage and the
// timings, with no [DONE]. input_tokens counts the rendered prompt.
func TestResponsesAPI(t *testing.T) {
	ts := startServer(t, testConfig())
	const conv = `{"role":"system","content":"Book"},{"role":"user","content":"What is the best book"}`
	var chat struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}
	ts.post("/v1/chat/completions", `{"messages":[`+conv+`],"max_tokens":8,"temperature":0}`, 200, &chat)
	want := chat.Choices[0].Message.Content
	if want == "" {
		t.Fatal("the chat generated nothing; pick another prompt")
	}

	var resp struct {
		ID     string `json:"id"`
		Object string `json:"object"`
		Status string `json:"status"`
		Output []struct {
			ID      string `json:"id"`
			Type    string `json:"type"`
			Role    string `json:"role"`
			Content []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"content"`
		} `json:"output"`
		Usage struct {
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
			TotalTokens  int `json:"total_tokens"`
		} `json:"usage"`
	}
	// The same conversation as a list of items, and as instructions and
	// a string.
	for _, body := range []string{
		`{"input":[` + conv + `],"max_output_tokens":8,"temperature":0}`,
		`{"instructions":"Book","input":"What is the best book","max_output_tokens":8,"temperature":0}`,
		`{"input":[{"role":"system","content":[{"type":"input_text","text":"Book"}]},{"type":"message","role":"user","content":"What is the best book"}],"max_output_tokens":8,"temperature":0}`,
	} {
		ts.post("/v1/responses", body, 200, &resp)
		if !strings.HasPrefix(resp.ID, "resp_") || resp.Object != "response" || resp.Status != "completed" || len(resp.Output) != 1 {
			t.Fatalf("%s: response %+v", body, resp)
		}
		out := resp.Output[0]
		if !strings.HasPrefix(out.ID, "msg_") || out.Type != "message" || out.Role != "assistant" || len(out.Content) != 1 ||
			out.Content[0].Type != "output_text" || out.Content[0].Text != want {
			t.Errorf("%s: output %+v, want the chat's text %q", body, out, want)
		}
		if u := resp.Usage; u.InputTokens != chat.Usage.PromptTokens || u.OutputTokens != 8 || u.TotalTokens != u.InputTokens+u.OutputTokens {
			t.Errorf("%s: usage %+v, want %d input tokens", body, u, chat.Usage.PromptTokens)
		}
	}

	code, b := ts.do(t.Context(), http.MethodPost, "/responses", `{"input":[`+conv+`],"max_output_tokens":8,"temperature":0,"stream":true,"timings_per_token":true}`)
	if code != 200 {
		t.Fatalf("stream: %d %s", code, b)
	}
	var types []string
	text := ""
	var completed map[string]any
	for _, block := range strings.Split(strings.TrimSpace(string(b)), "\n\n") {
		name, data, ok := strings.Cut(block, "\n")
		name, _ = strings.CutPrefix(name, "event: ")
		data, _ = strings.CutPrefix(data, "data: ")
		var ev map[string]any
		if !ok || json.Unmarshal([]byte(data), &ev) != nil || ev["type"] != name {
			t.Fatalf("event %q: want a named event whose data has its type", block)
		}
		if len(types) == 0 || types[len(types)-1] != name {
			types = append(types, name)
		}
		switch name {
		case "response.output_text.delta":
			text += ev["delta"].(string)
			if ev["timings"] == nil {
				t.Errorf("delta without timings (timings_per_token): %s", data)
			}
		case "response.completed":
			completed = ev
		}
	}
	wantTypes := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}
	if strings.Join(types, " ") != strings.Join(wantTypes, " ") {
		t.Errorf("events %v, want %v", types, wantTypes)
	}
	if text != want {
		t.Errorf("streamed text %q, want %q", text, want)
	}
	if completed == nil || completed["timings"] == nil || completed["response"].(map[string]any)["usage"] == nil {
		t.Errorf("response.completed %v: want the usage and the timings", completed)
	}

	var count struct {
		InputTokens int    `json:"input_tokens"`
		Object      string `json:"object"`
	}
	ts.post("/v1/responses/input_tokens", `{"input":[`+conv+`]}`, 200, &count)
	if count.InputTokens != chat.Usage.PromptTokens || count.Object != "response.input_tokens" {
		t.Errorf("input_tokens %+v, want %d", count, chat.Usage.PromptTokens)
	}
}
