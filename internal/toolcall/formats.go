package toolcall

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// hermes is Hermes 2/3's and Qwen 2.5/3's: each call a JSON object
// {"name", "arguments"} between <tool_call> and </tool_call>.
var hermes = &Format{
	Name:     "hermes",
	starts:   []string{"<tool_call>"},
	triggers: []string{`<tool_call>`},
	argsKey:  "arguments",
	parse: func(text string) (string, []Call, error) {
		return tagged(text, "<tool_call>", "</tool_call>", "arguments")
	},
	grammar: func(many bool) string {
		one := `"<tool_call>" space call space "</tool_call>"`
		if many {
			return "( " + one + " space )+"
		}
		return one
	},
}

// functionary31 is Functionary v3.1's (and Llama 3.1's own function tag):
// <function=NAME>{arguments}</function>.
var functionary31 = &Format{
	Name:   "functionary-v3.1",
	starts: []string{"<function="},
	parse: func(text string) (string, []Call, error) {
		return functionBlocks(text, func(name, body string) (string, error) {
			args, after, err := firstJSON(body)
			if err != nil {
				return "", fmt.Errorf("call %s: arguments: %w", name, err)
			}
			if strings.TrimSpace(after) != "" {
				return "", fmt.Errorf("call %s: text after its arguments", name)
			}
			return string(compact([]byte(args))), nil
		})
	},
}

// llama3 is Llama 3.x's: the answer is one JSON object {"name",
// "parameters"} (or several, separated by semicolons), optionally after
// <|python_tag|>.
var llama3 = &Format{
	Name:   "llama3",
	starts: []string{"{", "<|python_tag|>"},
	// An answer that opens with a JSON object naming a function.
	triggers: []string{`^\s*(\{\s*"name")[\s\S]*$`},
	atStart:  true,
	argsKey:  "parameters",
	parse: func(text string) (string, []Call, error) {
		body := strings.TrimSpace(text)
		body = strings.TrimSpace(strings.TrimPrefix(body, "<|python_tag|>"))
		if !strings.HasPrefix(body, "{") {
			return text, nil, nil
		}
		var calls []Call
		for body != "" {
			obj, rest, err := firstJSON(body)
			if err != nil {
				return text, nil, nil // not a call: an answer that starts with a brace
			}
			c, err := callObject([]byte(obj), "parameters")
			if err != nil {
				return text, nil, nil
			}
			calls = append(calls, c)
			body = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), ";"))
		}
		return "", calls, nil
	},
	grammar: func(many bool) string {
		if many {
			return `call ( space ";" space call )*`
		}
		return "call"
	},
}

// mistral is Mistral's: [TOOL_CALLS] then a JSON list of {"name",
// "arguments"}, or, in newer templates, NAME[ARGS]{arguments}.
var mistral = &Format{
	Name:     "mistral",
	starts:   []string{"[TOOL_CALLS]"},
	triggers: []string{`\[TOOL_CALLS\]`},
	argsKey:  "arguments",
	parse: func(text string) (string, []Call, error) {
		i := strings.Index(text, "[TOOL_CALLS]")
		if i < 0 {
			return strings.TrimSpace(text), nil, nil
		}
		content, rest := text[:i], strings.TrimSpace(text[i+len("[TOOL_CALLS]"):])
		var calls []Call
		if strings.HasPrefix(rest, "[") {
			list, _, err := firstJSON(rest)
			if err != nil {
				return "", nil, fmt.Errorf("the list after [TOOL_CALLS]: %w", err)
			}
			var raws []json.RawMessage
			if err := json.Unmarshal([]byte(list), &raws); err != nil {
				return "", nil, err
			}
			for _, raw := range raws {
				c, err := callObject(raw, "arguments")
				if err != nil {
					return "", nil, err
				}
				calls = append(calls, c)
			}
			return strings.TrimSpace(content), calls, nil
		}
		for _, part := range strings.Split(rest, "[TOOL_CALLS]") {
			name, args, ok := strings.Cut(part, "[ARGS]")
			if !ok {
				return "", nil, errors.New("a call without [ARGS] after [TOOL_CALLS]")
			}
			obj, _, err := firstJSON(args)
			if err != nil {
				return "", nil, fmt.Errorf("call %s: arguments: %w", name, err)
			}
			calls = append(calls, Call{Name: strings.TrimSpace(name), Arguments: string(compact([]byte(obj)))})
		}
		return strings.TrimSpace(content), calls, nil
	},
	grammar: func(many bool) string {
		if many {
			return `"[TOOL_CALLS]" "[" space call ( "," space call )* space "]"`
		}
		return `"[TOOL_CALLS]" "[" space call space "]"`
	},
}

// deepseekR1 is DeepSeek R1's: <｜tool▁calls▁begin｜>, then for each call
// <｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME, its arguments in a
// ```json block, <｜tool▁call▁end｜>, and <｜tool▁calls▁end｜>.
var deepseekR1 = &Format{
	Name:   "deepseek-r1",
	starts: []string{"<｜tool▁calls▁begin｜>"},
	parse: func(text string) (string, []Call, error) {
		const begin, end = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
		i := strings.Index(text, begin)
		if i < 0 {
			return strings.TrimSpace(text), nil, nil
		}
		content, rest := text[:i], text[i+len(begin):]
		rest, _, _ = strings.Cut(rest, end)
		var calls []Call
		for _, block := range strings.Split(rest, "<｜tool▁call▁begin｜>")[1:] {
			block, _, _ = strings.Cut(block, "<｜tool▁call▁end｜>")
			_, after, ok := strings.Cut(block, "<｜tool▁sep｜>")
			if !ok {
				return "", nil, errors.New("a call without <｜tool▁sep｜>")
			}
			name, code, _ := strings.Cut(after, "\n")
			code = strings.TrimSpace(code)
			code = strings.TrimPrefix(code, "```json")
			code = strings.TrimSuffix(strings.TrimSpace(code), "```")
			obj, _, err := firstJSON(code)
			if err != nil {
				return "", nil, fmt.Errorf("call %s: arguments: %w", name, err)
			}
			calls = append(calls, Call{Name: strings.TrimSpace(name), Arguments: string(compact([]byte(obj)))})
		}
		return strings.TrimSpace(content), calls, nil
	},
}

// tagged reads calls written as JSON objects between open and close tags;
// the text around them is the content.
func tagged(text, open, close, argsKey string) (string, []Call, error) {
	var content strings.Builder
	var calls []Call
	for {
		i := strings.Index(text, open)
		if i < 0 {
			content.WriteString(text)
			return strings.TrimSpace(content.String()), calls, nil
		}
		content.WriteString(text[:i])
		rest := text[i+len(open):]
		j := strings.Index(rest, close)
		if j < 0 {
			return "", nil, fmt.Errorf("a %s the answer never closes", open)
		}
		c, err := callObject([]byte(strings.TrimSpace(rest[:j])), argsKey)
		if err != nil {
			return "", nil, err
		}
		calls = append(calls, c)
		text = rest[j+len(close):]
	}
}

// qwenXML is Qwen3-Coder's (and Qwen 3.5's, Nemotron 3's, Seed-OSS's):
// <tool_call><function=NAME><parameter=KEY>VALUE</parameter>...</function>
// </tool_call>, each value as written: text for a string parameter, JSON
// for the others (valueTypes says which, from the tools' schemas).
var qwenXML = &Format{
	Name:   "qwen-xml",
	starts: []string{"<tool_call>", "<function="},
	parse:  func(text string) (string, []Call, error) { return parseQwenXML(text, nil) },
}

// functionBlocks reads calls written as <function=NAME>BODY</function>,
// args turning a body into the call's arguments; the text around them is
// the content (less any <tool_call> wrappers).
func functionBlocks(text string, args func(name, body string) (string, error)) (string, []Call, error) {
	var content strings.Builder
	var calls []Call
	for {
		i := strings.Index(text, "<function=")
		if i < 0 {
			content.WriteString(text)
			rest := strings.NewReplacer("<tool_call>", "", "</tool_call>", "").Replace(content.String())
			return strings.TrimSpace(rest), calls, nil
		}
		content.WriteString(text[:i])
		rest := text[i+len("<function="):]
		j := strings.Index(rest, ">")
		end := strings.Index(rest, "</function>")
		if j < 0 || end < j {
			return "", nil, errors.New("a <function= the answer never closes")
		}
		name := strings.TrimSpace(rest[:j])
		a, err := args(name, rest[j+1:end])
		if err != nil {
			return "", nil, err
		}
		calls = append(calls, Call{Name: name, Arguments: a})
		text = rest[end+len("</function>"):]
	}
}

// parseQwenXML reads Qwen3-Coder's calls; textParams names the parameters
// whose values are text (by tool), and any other value that is JSON is
// taken as JSON, else as text.
func parseQwenXML(text string, textParams map[string]map[string]bool) (string, []Call, error) {
	return functionBlocks(text, func(name, body string) (string, error) {
		args := map[string]json.RawMessage{}
		var order []string
		for {
			k := strings.Index(body, "<parameter=")
			if k < 0 {
				break
			}
			after := body[k+len("<parameter="):]
			gt := strings.Index(after, ">")
			close := strings.Index(after, "</parameter>")
			if gt < 0 || close < gt {
				return "", fmt.Errorf("call %s: a <parameter= it never closes", name)
			}
			key := strings.TrimSpace(after[:gt])
			value := strings.TrimSuffix(strings.TrimPrefix(after[gt+1:close], "\n"), "\n")
			raw, _ := json.Marshal(value)
			if !textParams[name][key] && json.Valid([]byte(value)) {
				raw = compact([]byte(value))
			}
			if _, dup := args[key]; !dup {
				order = append(order, key)
			}
			args[key] = raw
			body = after[close+len("</parameter>"):]
		}
		var b strings.Builder
		b.WriteByte('{')
		for n, k := range order {
			if n > 0 {
				b.WriteByte(',')
			}
			key, _ := json.Marshal(k)
			b.Write(key)
			b.WriteByte(':')
			b.Write(args[k])
		}
		b.WriteByte('}')
		return b.String(), nil
	})
}
