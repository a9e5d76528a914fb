package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// hermesTemplate is a small chat template in Hermes' manner: it lists the
// tools, writes earlier calls in <tool_call> tags and tool answers in
// <tool_response> tags.
const hermesTemplate = `{%- if tools -%}<tools>{%- for t in tools -%}{{ t.function.name }};{%- endfor -%}</tools>{%- endif -%}` +
	`{%- for m in messages -%}<|{{ m.role }}|>{{ m.content if m.content else "" }}` +
	`{%- if m.tool_calls -%}{%- for c in m.tool_calls -%}<tool_call>{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}</tool_call>{%- endfor -%}{%- endif -%}` +
	`{%- if m.role == "tool" -%}<tool_response>{{ m.tool_call_id }}</tool_response>{%- endif -%}<|end|>{%- endfor -%}` +
	`{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}`

const weatherTools = `[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string","maxLength":8},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city","days"]}}},` +
	`{"type":"function","function":{"name":"now","parameters":{"type":"object","properties":{}}}}]`

// TestToolCalls: with a template whose tool-call format kvtrim reads,
// tool_choice required (or a named function) forces a call whose
// arguments follow the tool's schema, returned as OpenAI's tool_calls,
// whole and streamed; auto lets the tiny model tell its story as content;
// earlier calls and tool answers reach the template; bad tools, choices
// and templates get 400s.
func TestToolCalls(t *testing.T) {
	cfg := testConfig()
	cfg.Jinja, cfg.ChatTemplate = true, hermesTemplate
	ts := startServer(t, cfg)
	type call struct {
		ID       string
		Type     string
		Index    *int
		Function struct{ Name, Arguments string }
	}
	type answer struct {
		Choices []struct {
			Message struct {
				Content   *string
				ToolCalls []call `json:"tool_calls"`
			}
			FinishReason string `json:"finish_reason"`
		}
	}
	checkWeather := func(c call) {
		t.Helper()
		var args struct {
			City string
			Days int
		}
		if err := json.Unmarshal([]byte(c.Function.Arguments), &args); err != nil || c.Function.Name != "get_weather" ||
			len([]rune(args.City)) > 8 || args.Days < 1 || args.Days > 7 || !strings.HasPrefix(c.ID, "call_") || c.Type != "function" {
			t.Errorf("call %+v: %v", c, err)
		}
	}
	const ask = `{"messages":[{"role":"user","content":"Weather in Paris?"}],"max_tokens":200,"temperature":0,`
	var a answer
	ts.post("/v1/chat/completions", ask+`"tools":`+weatherTools+`,"tool_choice":{"type":"function","function":{"name":"get_weather"}}}`, 200, &a)
	if len(a.Choices) != 1 || len(a.Choices[0].Message.ToolCalls) != 1 || a.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("named: %+v", a)
	}
	checkWeather(a.Choices[0].Message.ToolCalls[0])

	a = answer{}
	ts.post("/v1/chat/completions", ask+`"tools":`+weatherTools+`,"tool_choice":"required"}`, 200, &a)
	if len(a.Choices[0].Message.ToolCalls) != 1 || a.Choices[0].FinishReason != "tool_calls" {
		t.Errorf("required: %+v", a)
	}

	a = answer{}
	ts.post("/v1/chat/completions", ask+`"tools":`+weatherTools+`}`, 200, &a)
	if c := a.Choices[0]; len(c.Message.ToolCalls) != 0 || c.Message.Content == nil || *c.Message.Content == "" || c.FinishReason == "tool_calls" {
		t.Errorf("auto, answered with a story: %+v", a)
	}

	// Streamed: the call comes in a delta of its own, with its index.
	code, body := ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", ask+`"stream":true,"tools":`+weatherTools+`,"tool_choice":{"type":"function","function":{"name":"get_weather"}}}`)
	if code != 200 {
		t.Fatalf("streamed: %d %s", code, body)
	}
	st := readChatStream(t, body)
	content, finish := st.Content, st.Finish
	calls := make([]call, len(st.ToolCalls))
	for i, raw := range st.ToolCalls {
		if err := json.Unmarshal(raw, &calls[i]); err != nil {
			t.Fatal(err)
		}
	}
	if len(calls) != 1 || calls[0].Index == nil || *calls[0].Index != 0 || strings.Contains(content, "<tool_call>") || finish != "tool_calls" {
		t.Errorf("streamed: calls %+v, content %q, finish %q", calls, content, finish)
	} else {
		checkWeather(calls[0])
	}

	// The round trip's second turn: the call and the tool's answer are
	// rendered into the prompt.
	var p struct{ Prompt string }
	ts.post("/apply-template", `{"messages":[{"role":"user","content":"Weather?"},`+
		`{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\",\"days\":1}"}}]},`+
		`{"role":"tool","tool_call_id":"call_1","content":"sunny"}],"tools":`+weatherTools+`}`, 200, &p)
	want := `<tools>get_weather;now;</tools><|user|>Weather?<|end|><|assistant|><tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "days": 1}}</tool_call><|end|><|tool|>sunny<tool_response>call_1</tool_response><|end|><|assistant|>`
	if p.Prompt != want {
		t.Errorf("second turn:\n%s\nwant\n%s", p.Prompt, want)
	}

	for _, c := range []struct{ body, msg string }{
		{`"tools":[{"type":"function","function":{"name":"x","parameters":{"type":"kaboom"}}}]`, "kaboom"},
		{`"tools":[{"type":"retrieval"}]`, "only function tools"},
		{`"tools":` + weatherTools + `,"tool_choice":"sometimes"`, "Invalid tool_choice: sometimes"},
		{`"tools":` + weatherTools + `,"tool_choice":{"type":"function","function":{"name":"fly"}}`, `no tool named "fly"`},
		{`"tools":` + weatherTools + `,"grammar":"root ::= \"a\""`, "Cannot use custom grammar constraints with tools."},
		{`"tool_choice":"required"`, "give the tools"},
	} {
		code, b := ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", ask+c.body+`}`)
		wantError(t, code, b, 400, typeInvalidRequest, c.msg)
	}

	// A template that shows the tools in a form kvtrim does not read
	// refuses them, unless no call may be made.
	cfg.ChatTemplate = `{%- if tools -%}TOOLS: {{ tools | tojson }}{%- endif -%}{%- for m in messages -%}{{ m.content }}{%- endfor -%}`
	ts = startServer(t, cfg)
	code, b := ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", ask+`"tools":`+weatherTools+`}`)
	wantError(t, code, b, 400, typeInvalidRequest, "does not read yet")
	ts.post("/v1/chat/completions", ask+`"tools":`+weatherTools+`,"tool_choice":"none"}`, 200, &a)

	// A template that never shows the model its tools: the answer is read
	// as text, as llama-server reads it, and no call can be required.
	cfg.ChatTemplate = `{%- for m in messages -%}{{ m.content }}{%- endfor -%}`
	ts = startServer(t, cfg)
	a = answer{}
	ts.post("/v1/chat/completions", ask+`"tools":`+weatherTools+`}`, 200, &a)
	if len(a.Choices) != 1 || len(a.Choices[0].Message.ToolCalls) != 0 {
		t.Errorf("tools not shown: %+v", a)
	}
	code, b = ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", ask+`"tools":`+weatherTools+`,"tool_choice":"required"}`)
	wantError(t, code, b, 400, typeInvalidRequest, "does not show tools")

	// Built-in templates take no tools, as llama-server without --jinja.
	ts = startServer(t, testConfig())
	code, b = ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", ask+`"tools":`+weatherTools+`}`)
	wantError(t, code, b, 400, typeInvalidRequest, "tools param requires --jinja flag")
}

// TestToolCallsAutoEachFormat: with tool_choice auto, each format with a
// grammar builds its lazy grammar and triggers (the one without reads its
// calls unconstrained) (a trigger libllama's regex
// could not compile would abort the process) and the tiny model's story
// comes back as content.
func TestToolCallsAutoEachFormat(t *testing.T) {
	for name, marker := range map[string]string{
		"hermes":  "<tool_call>",
		"llama3":  "Given the following functions, please respond with a JSON for a function call",
		"mistral": "[TOOL_CALLS]",
		// Qwen3-Coder's XML: no grammar, its calls read as written.
		"qwen-xml": "<tool_call><function=NAME><parameter=KEY>",
	} {
		cfg := testConfig()
		cfg.Jinja = true
		cfg.ChatTemplate = `{%- if tools -%}` + marker + `{{ tools | tojson }}{%- endif -%}{%- for m in messages -%}{{ m.content }}{%- endfor -%}`
		ts := startServer(t, cfg)
		var a struct {
			Choices []struct {
				Message struct {
					Content   string
					ToolCalls []any `json:"tool_calls"`
				}
			}
		}
		for _, stream := range []string{"false", "true"} {
			code, b := ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":24,"temperature":0,"stream":`+stream+`,"tools":`+weatherTools+`}`)
			if code != 200 {
				t.Errorf("%s, stream %s: %d %s", name, stream, code, b)
			}
		}
		ts.post("/v1/chat/completions", `{"messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":24,"temperature":0,"tools":`+weatherTools+`}`, 200, &a)
		if len(a.Choices) != 1 || a.Choices[0].Message.Content == "" || len(a.Choices[0].Message.ToolCalls) != 0 {
			t.Errorf("%s: %+v", name, a)
		}
	}
}
