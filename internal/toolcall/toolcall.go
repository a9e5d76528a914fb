// Package toolcall reads the tool calls a model writes in its answer, in
// the formats of the model families whose chat templates llama.cpp's chat
// layer recognises, and builds the grammars that force a call when a
// request requires one. A format is chosen by the markers its chat
// template holds (Detect); each format is one value of Format.
package toolcall

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/kvtrim/kvtrim/internal/jsongrammar"
)

// Tool is a function a request offers the model.
type Tool struct {
	Name string
	// Parameters is the JSON Schema of its arguments (an object schema).
	Parameters json.RawMessage
}

// Call is one tool call read from an answer.
type Call struct {
	ID   string
	Name string
	// Arguments is the call's arguments as JSON text, as OpenAI's
	// tool_calls carry them.
	Arguments string
}

// Format is a model family's way of writing tool calls.
type Format struct {
	// Name says which (hermes, llama3, mistral, deepseek-r1,
	// functionary-v3.1).
	Name string
	// starts are the texts a call may begin with: an answer's text is
	// held back from a stream from the first of them on (Stream).
	starts []string
	// atStart says a call can only begin the answer (llama3's bare JSON).
	atStart bool
	// parse splits an answer into its content and its calls.
	parse func(text string) (content string, calls []Call, err error)
	// grammar is the GBNF of one or more calls to tools (one when !many),
	// built from the rule call, which matches one call's JSON object
	// {name, arguments} (argsKey names its arguments).
	grammar func(many bool) string
	argsKey string
	// triggers are the regular expressions (C++ std::regex syntax) whose
	// match begins a call: a lazy grammar constrains the answer from
	// there on when calls are allowed but not required.
	triggers []string
}

// Triggers are the patterns that begin a call, for a lazy grammar; none
// when the format has no grammar.
func (f *Format) Triggers() []string {
	if f.grammar == nil {
		return nil
	}
	return f.triggers
}

// formats are the formats Detect knows.
var formats = []*Format{hermes, llama3, mistral, functionary31, deepseekR1, qwenXML}

// Names are the names of the formats Detect knows.
func Names() []string {
	names := make([]string, len(formats))
	for i, f := range formats {
		names[i] = f.Name
	}
	return names
}

// Detect picks the format a chat template's model writes tool calls in,
// from the markers the template holds, or nil when it knows none.
func Detect(template string) *Format {
	has := func(s string) bool { return strings.Contains(template, s) }
	switch {
	case has("<｜tool▁calls▁begin｜>"):
		return deepseekR1
	case has("[TOOL_CALLS]"):
		return mistral
	case has("<function=") && has("<parameter="):
		return qwenXML
	case has("<function=") && has("<|python_tag|>"):
		return functionary31
	case has("<tool_call>"):
		return hermes
	case has("Given the following functions, please respond with a JSON for a function call"):
		return llama3
	}
	return nil
}

// WithTools is f reading calls to tools: Qwen3-Coder's format writes
// parameter values bare, and a string parameter's value must stay text
// even when it reads as JSON (a zip code). Other formats are unchanged.
func (f *Format) WithTools(tools []Tool) *Format {
	if f != qwenXML {
		return f
	}
	text := map[string]map[string]bool{}
	for _, t := range tools {
		var schema struct {
			Properties map[string]struct {
				Type any `json:"type"`
			} `json:"properties"`
		}
		if json.Unmarshal(t.Parameters, &schema) != nil {
			continue
		}
		text[t.Name] = map[string]bool{}
		for k, p := range schema.Properties {
			text[t.Name][k] = p.Type == "string"
		}
	}
	g := *f
	g.parse = func(s string) (string, []Call, error) { return parseQwenXML(s, text) }
	return &g
}

// Parse splits an answer into its content and its tool calls, giving
// each call an id.
func (f *Format) Parse(text string) (string, []Call, error) {
	content, calls, err := f.parse(text)
	if err != nil {
		return "", nil, fmt.Errorf("%s tool calls: %w", f.Name, err)
	}
	for i := range calls {
		calls[i].ID = newID()
	}
	return content, calls, nil
}

// Grammar is the GBNF grammar that forces the answer to be one call (or,
// with parallel, one or more) to one of tools, with arguments that follow
// the tool's parameter schema.
func (f *Format) Grammar(tools []Tool, parallel bool) (string, error) {
	if f.grammar == nil {
		return "", fmt.Errorf("%s tool calls cannot be required by a grammar yet", f.Name)
	}
	if len(tools) == 0 {
		return "", errors.New("no tools to call")
	}
	alts := make([]json.RawMessage, len(tools))
	for i, t := range tools {
		params := t.Parameters
		if len(params) == 0 || string(params) == "null" {
			params = json.RawMessage(`{"type":"object"}`)
		}
		name, _ := json.Marshal(t.Name)
		alts[i] = json.RawMessage(fmt.Sprintf(`{"type":"object","properties":{"name":{"const":%s},%q:%s},"required":["name",%q]}`, name, f.argsKey, params, f.argsKey))
	}
	schema, _ := json.Marshal(map[string]any{"anyOf": alts})
	if len(tools) == 1 {
		schema = alts[0]
	}
	g, err := jsongrammar.FromSchema(schema)
	if err != nil {
		return "", fmt.Errorf("tool parameters: %w", err)
	}
	// The schema's root becomes the rule call.
	g = strings.Replace(g, "root ::=", "call ::=", 1)
	return "root ::= " + f.grammar(parallel) + "\n" + g, nil
}

// newID is a tool call's id, as OpenAI's: "call_" and random letters.
func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "call_" + hex.EncodeToString(b[:])
}

// callObject reads {"name": ..., argsKey: {...}} (arguments as an object
// or as JSON text).
func callObject(raw []byte, argsKey string) (Call, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return Call{}, err
	}
	var c Call
	if err := json.Unmarshal(obj["name"], &c.Name); err != nil || c.Name == "" {
		return Call{}, errors.New(`a call without a "name"`)
	}
	args, ok := obj[argsKey]
	if !ok {
		args = json.RawMessage(`{}`)
	}
	var s string
	if json.Unmarshal(args, &s) == nil {
		if !json.Valid([]byte(s)) {
			return Call{}, fmt.Errorf("call %s: its arguments are not JSON", c.Name)
		}
		c.Arguments = s
	} else {
		c.Arguments = string(compact(args))
	}
	return c, nil
}

// compact is JSON without its insignificant whitespace.
func compact(raw []byte) []byte {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

// firstJSON decodes the JSON value at the start of s (after spaces) and
// returns its text and the rest of s.
func firstJSON(s string) (value, rest string, err error) {
	s = strings.TrimLeft(s, " \t\r\n")
	d := json.NewDecoder(strings.NewReader(s))
	var raw json.RawMessage
	if err := d.Decode(&raw); err != nil {
		return "", "", err
	}
	n := int(d.InputOffset())
	return s[:n], s[n:], nil
}
