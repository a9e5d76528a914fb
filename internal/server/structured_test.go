package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// person is the schema the structured-output tests ask for.
const personSchema = `{"type":"object","properties":{"name":{"type":"string","minLength":1,"maxLength":12},` +
	`"age":{"type":"integer","minimum":0,"maximum":150},"tags":{"type":"array","items":{"enum":["a","b"]},"maxItems":2}},` +
	`"required":["name","age"],"additionalProperties":false}`

// checkPerson validates an answer against personSchema, by hand.
func checkPerson(t *testing.T, answer string) {
	t.Helper()
	var got map[string]json.RawMessage
	if err := json.Unmarshal([]byte(answer), &got); err != nil {
		t.Fatalf("the answer is not a JSON object: %v\n%q", err, answer)
	}
	var name string
	var age int
	var tags []string
	if err := json.Unmarshal(got["name"], &name); err != nil || name == "" || len([]rune(name)) > 12 {
		t.Errorf("name %s: %v", got["name"], err)
	}
	if err := json.Unmarshal(got["age"], &age); err != nil || age < 0 || age > 150 {
		t.Errorf("age %s: %v", got["age"], err)
	}
	if raw, ok := got["tags"]; ok {
		if err := json.Unmarshal(raw, &tags); err != nil || len(tags) > 2 {
			t.Errorf("tags %s: %v", raw, err)
		}
		for _, tag := range tags {
			if tag != "a" && tag != "b" {
				t.Errorf("tag %q", tag)
			}
		}
	}
	for k := range got {
		if k != "name" && k != "age" && k != "tags" {
			t.Errorf("a property the schema does not allow: %q", k)
		}
	}
}

// TestStructuredOutput: response_format and json_schema constrain the
// answer to the schema (the tiny model writes no JSON on its own), on a
// chat, a completion and a SnapKV-compressed long prompt; bad schemas
// and formats get llama-server's 400s.
func TestStructuredOutput(t *testing.T) {
	cfg := testConfig()
	cfg.CtxSize = 2048
	ts := startServer(t, cfg)
	type answer struct {
		Content string
		Choices []struct {
			Message struct{ Content string }
		}
		Kvtrim *struct {
			PromptTokens int `json:"prompt_tokens"`
			KeptCells    int `json:"kept_cells"`
		}
	}
	for _, format := range []string{
		`{"type":"json_schema","json_schema":{"name":"person","schema":` + personSchema + `}}`,
		`{"type":"json_object","schema":` + personSchema + `}`,
	} {
		var a answer
		ts.post("/v1/chat/completions", `{"messages":[{"role":"user","content":"Who is Lily?"}],"max_tokens":300,"temperature":0,"response_format":`+format+`}`, 200, &a)
		checkPerson(t, a.Choices[0].Message.Content)
	}
	var a answer
	ts.post("/v1/chat/completions", `{"messages":[{"role":"user","content":"Who is Lily?"}],"max_tokens":300,"temperature":0.8,"seed":3,"response_format":{"type":"json_object"}}`, 200, &a)
	var obj map[string]any
	if err := json.Unmarshal([]byte(a.Choices[0].Message.Content), &obj); err != nil {
		t.Errorf("json_object without a schema: %v\n%q", err, a.Choices[0].Message.Content)
	}
	ts.post("/completion", `{"prompt":"Once upon a time","n_predict":20,"json_schema":{"const":"42"}}`, 200, &a)
	if a.Content != `"42"` {
		t.Errorf("const 42: %q", a.Content)
	}

	// A long prompt, compressed to a tenth of its cells.
	long := story(t)
	long = long[:min(len(long), 3000)]
	ts.post("/completion", fmt.Sprintf(`{"prompt":%s,"n_predict":300,"temperature":0,"json_schema":%s,"kvtrim":{"policy":"snapkv","ratio":0.1,"window":8}}`, jsonString(long), personSchema), 200, &a)
	checkPerson(t, a.Content)
	if a.Kvtrim == nil || a.Kvtrim.KeptCells >= a.Kvtrim.PromptTokens/2 {
		t.Errorf("the long prompt was not compressed: %+v", a.Kvtrim)
	}

	for _, c := range []struct{ path, body, msg string }{
		{"/v1/chat/completions", `"response_format":{"type":"sound"}`, "but got: sound"},
		{"/v1/chat/completions", `"response_format":{"type":"json_object","schema":123}`, "json_schema"},
		{"/v1/chat/completions", `"response_format":{"type":"json_object","schema":{"type":123}}`, "type 123"},
		{"/v1/chat/completions", `"response_format":{"type":"json_object","schema":{"type":"hiccup"}}`, "hiccup"},
		{"/v1/chat/completions", `"json_schema":{"type":"string","pattern":"^(a$"}`, "parentheses"},
		{"/v1/chat/completions", `"json_schema":{"$ref":"#/$defs/missing"}`, "missing"},
		{"/v1/chat/completions", `"json_schema":{"const":1},"grammar":"root ::= \"a\""`, "Cannot use both"},
		{"/completion", `"response_format":{"type":"json_object"}`, "chat requests"},
	} {
		body := `{"messages":[{"role":"user","content":"hi"}],"prompt":"hi",` + c.body + `}`
		if c.path == "/completion" {
			body = strings.Replace(body, `"messages":[{"role":"user","content":"hi"}],`, "", 1)
		}
		code, b := ts.do(t.Context(), http.MethodPost, c.path, body)
		wantError(t, code, b, 400, typeInvalidRequest, c.msg)
	}
}
