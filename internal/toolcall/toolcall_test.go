package toolcall

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim/internal/testenv"
)

// TestDetect: each format is found in the chat templates of the pinned
// llama.cpp source that write it.
func TestDetect(t *testing.T) {
	dir := filepath.Join(testenv.LlamaSource(t), "models", "templates")
	for name, want := range map[string]string{
		"NousResearch-Hermes-3-Llama-3.1-8B-tool_use": "hermes",
		"Qwen-Qwen2.5-7B-Instruct":                    "hermes",
		"Qwen-Qwen3-0.6B":                             "hermes",
		"meta-llama-Llama-3.2-3B-Instruct":            "llama3",
		"meta-llama-Llama-3.3-70B-Instruct":           "llama3",
		"meetkai-functionary-medium-v3.1":             "functionary-v3.1",
		"mistralai-Mistral-Nemo-Instruct-2407":        "mistral",
		"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B":    "deepseek-r1",
		"Qwen3-Coder":          "qwen-xml",
		"Qwen3.5-4B":           "qwen-xml",
		"google-gemma-2-2b-it": "",
	} {
		src, err := os.ReadFile(filepath.Join(dir, name+".jinja"))
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if f := Detect(string(src)); f != nil {
			got = f.Name
		}
		if got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

// TestParse reads each format's calls, with the content around them.
func TestParse(t *testing.T) {
	for _, c := range []struct {
		f       *Format
		text    string
		content string
		calls   []Call
		bad     bool
	}{
		{hermes, "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "Let me look.", []Call{{Name: "get_weather", Arguments: `{"city":"Paris"}`}}, false},
		{hermes, `<tool_call>{"name":"a","arguments":"{\"x\":1}"}</tool_call><tool_call>{"name":"b"}</tool_call>`, "", []Call{{Name: "a", Arguments: `{"x":1}`}, {Name: "b", Arguments: `{}`}}, false},
		{hermes, "no call here", "no call here", nil, false},
		{hermes, `<tool_call>{"name":"a","arguments":{}}`, "", nil, true},
		{hermes, `<tool_call>{"arguments":{}}</tool_call>`, "", nil, true},
		{llama3, ` {"name": "python", "parameters": {"code": "print(1)"}}`, "", []Call{{Name: "python", Arguments: `{"code":"print(1)"}`}}, false},
		{llama3, `<|python_tag|>{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"y": [1]}}`, "", []Call{{Name: "a", Arguments: `{}`}, {Name: "b", Arguments: `{"y":[1]}`}}, false},
		{llama3, `{"story": "once"} and more`, `{"story": "once"} and more`, nil, false},
		{llama3, "Hello world", "Hello world", nil, false},
		{mistral, `Sure.[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}, "id": "abc123def"}]`, "Sure.", []Call{{Name: "get_weather", Arguments: `{"city":"Rome"}`}}, false},
		{mistral, `[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}`, "", []Call{{Name: "get_weather", Arguments: `{"city":"Oslo"}`}}, false},
		{functionary31, `<function=get_weather>{"city": "Lima"}</function>`, "", []Call{{Name: "get_weather", Arguments: `{"city":"Lima"}`}}, false},
		{qwenXML, "Let me check.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>", "Let me check.", []Call{{Name: "get_weather", Arguments: `{"city":"Paris","days":3}`}}, false},
		{qwenXML.WithTools([]Tool{{Name: "zip", Parameters: json.RawMessage(`{"type":"object","properties":{"code":{"type":"string"},"n":{"type":"integer"}}}`)}}),
			"<tool_call>\n<function=zip>\n<parameter=code>\n75001\n</parameter>\n<parameter=n>\n2\n</parameter>\n</function>\n</tool_call>", "", []Call{{Name: "zip", Arguments: `{"code":"75001","n":2}`}}, false},
		{qwenXML, "<tool_call>\n<function=f>\n<parameter=x>\n1", "", nil, true},
		{deepseekR1, "I will call.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Kyiv\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>", "I will call.", []Call{{Name: "get_weather", Arguments: `{"city":"Kyiv"}`}}, false},
	} {
		content, calls, err := c.f.Parse(c.text)
		if c.bad {
			if err == nil {
				t.Errorf("%s %q: no error", c.f.Name, c.text)
			}
			continue
		}
		if err != nil || content != c.content || len(calls) != len(c.calls) {
			t.Errorf("%s %q: %q %+v %v", c.f.Name, c.text, content, calls, err)
			continue
		}
		for i, call := range calls {
			if call.Name != c.calls[i].Name || call.Arguments != c.calls[i].Arguments || !strings.HasPrefix(call.ID, "call_") {
				t.Errorf("%s %q: call %d %+v, want %+v", c.f.Name, c.text, i, call, c.calls[i])
			}
		}
	}
}

// TestStream: content streams out until a call may begin; what is held is
// read at the end, and given back as content when it was no call.
func TestStream(t *testing.T) {
	run := func(f *Format, pieces ...string) (sent, rest string, calls []Call) {
		s := f.NewStream()
		for _, p := range pieces {
			sent += s.Write(p)
		}
		rest, calls, err := s.Finish()
		if err != nil {
			t.Fatal(err)
		}
		return sent, rest, calls
	}
	sent, rest, calls := run(hermes, "Let me ", "look.<tool", "_call>{\"name\":", "\"a\",\"arguments\":{}}</tool_call>")
	if sent != "Let me look." || rest != "" || len(calls) != 1 {
		t.Errorf("hermes: %q %q %+v", sent, rest, calls)
	}
	sent, rest, calls = run(hermes, "a <tool", "box> b")
	if sent+rest != "a <toolbox> b" || len(calls) != 0 {
		t.Errorf("hermes, no call: %q %q %+v", sent, rest, calls)
	}
	sent, rest, calls = run(llama3, " ", "{\"name\": \"a\", ", "\"parameters\": {}}")
	if sent != "" || len(calls) != 1 {
		t.Errorf("llama3: %q %q %+v", sent, rest, calls)
	}
	sent, rest, calls = run(llama3, "Once", " upon {a} time")
	if sent != "Once upon {a} time" || rest != "" || len(calls) != 0 {
		t.Errorf("llama3, a story: %q %q %+v", sent, rest, calls)
	}
}

// TestGrammar: a required call's grammar names the tools and parses.
func TestGrammar(t *testing.T) {
	tools := []Tool{{Name: "get_weather", Parameters: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`)}, {Name: "now"}}
	for _, f := range []*Format{hermes, llama3, mistral} {
		g, err := f.Grammar(tools, true)
		if err != nil || !strings.HasPrefix(g, "root ::= ") || !strings.Contains(g, "call ::=") || !strings.Contains(g, `get_weather`) {
			t.Errorf("%s: %v\n%s", f.Name, err, g)
		}
	}
	if _, err := deepseekR1.Grammar(tools, false); err == nil {
		t.Error("deepseek-r1: a grammar it has not")
	}
	if _, err := hermes.Grammar([]Tool{{Name: "x", Parameters: json.RawMessage(`{"type":"kaboom"}`)}}, false); err == nil {
		t.Error("a tool with a bad schema: no error")
	}
}
