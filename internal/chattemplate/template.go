// Package chattemplate renders a model's Jinja chat template (the GGUF's
// tokenizer.chat_template, or a file given with --chat-template-file) into
// a prompt, as llama-server's --jinja does: the messages, the BOS and EOS
// tokens' text, add_generation_prompt, enable_thinking, and the functions
// templates call (strftime_now, raise_exception). The Jinja engine is
// github.com/ardanlabs/jinja, pure Go.
package chattemplate

import (
	"fmt"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"

	"github.com/kvtrim/kvtrim/internal/reasoning"
)

// Template is a compiled chat template with its model's BOS and EOS text.
// It is safe for concurrent use.
type Template struct {
	t        *jinja.Template
	bos, eos string
	// stripBOS drops a BOS the template writes first: the tokenizer adds
	// one already (llama-server does the same).
	stripBOS bool
	// system says the template renders a system message; one that does
	// not gets it merged into the next message, as llama.cpp's chat layer
	// does.
	system bool
	// reasoning is the template's reasoning tags, nil without: only with
	// them is enable_thinking true by default, as llama-server turns it on
	// only for templates whose reasoning its chat layer finds.
	reasoning *reasoning.Tags
}

// Message is one turn of a conversation; Extra holds its other fields
// (tool_calls, tool_call_id, name), which templates read too.
type Message struct {
	Role, Content string
	Extra         map[string]any
}

// Input is what a template renders: the conversation, whether to open
// the assistant's turn after it, more variables (llama-server's
// chat_template_kwargs: enable_thinking, true by default for a template
// that reasons; preserve_reasoning, true by default as llama-server sets
// it, and the variables it stands for; reasoning_effort), and the time
// strftime_now reads.
type Input struct {
	Messages            []Message
	AddGenerationPrompt bool
	Vars                map[string]any
	Now                 time.Time
}

// Compile parses a Jinja chat template for a model whose BOS and EOS
// tokens read bos and eos, and whose tokenizer adds the BOS when addBOS.
func Compile(source, bos, eos string, addBOS bool) (*Template, error) {
	t, err := jinja.Compile(source)
	if err != nil {
		return nil, fmt.Errorf("chat template: %w", err)
	}
	tmpl := &Template{t: t, bos: bos, eos: eos, stripBOS: addBOS, system: true, reasoning: reasoning.Detect(source)}
	// Does it render a system message? Probe it with a marker, as
	// llama.cpp probes a template's capabilities.
	const marker = "kvtrim-system-probe"
	out, err := tmpl.render(Input{Messages: []Message{{Role: "system", Content: marker}, {Role: "user", Content: "hi"}}})
	tmpl.system = err == nil && strings.Contains(out, marker)
	return tmpl, nil
}

// Reasoning is the template's reasoning tags, or nil when it has none
// kvtrim reads (or for no template).
func (t *Template) Reasoning() *reasoning.Tags {
	if t == nil {
		return nil
	}
	return t.reasoning
}

// ShowsTools says whether the template writes the tools it is given into
// the prompt (llama.cpp's chat layer probes templates the same way): a
// template that does not gives its model no way to call them.
func (t *Template) ShowsTools() bool {
	const marker = "kvtrim_probe_tool"
	in := Input{Messages: []Message{{Role: "user", Content: "hi"}}, AddGenerationPrompt: true}
	without, err := t.render(in)
	if err != nil {
		return false
	}
	in.Vars = map[string]any{"tools": []any{map[string]any{"type": "function", "function": map[string]any{
		"name": marker, "description": "", "parameters": map[string]any{"type": "object", "properties": map[string]any{}}}}}}
	with, err := t.render(in)
	return err == nil && with != without && strings.Contains(with, marker)
}

// Render renders a conversation.
func (t *Template) Render(in Input) (string, error) {
	msgs := in.Messages
	if !t.system && len(msgs) > 0 && msgs[0].Role == "system" {
		// As llama.cpp's chat layer: into the next message, or dropped.
		if len(msgs) > 1 {
			merged := append([]Message{{Role: msgs[1].Role, Content: msgs[0].Content + "\n" + msgs[1].Content, Extra: msgs[1].Extra}}, msgs[2:]...)
			msgs = merged
		} else {
			msgs = nil
		}
	}
	in.Messages = msgs
	return t.render(in)
}

func (t *Template) render(in Input) (string, error) {
	now := in.Now
	list := make([]jinja.Value, len(in.Messages))
	for i, m := range in.Messages {
		fields := map[string]any{"role": m.Role, "content": m.Content}
		for k, v := range m.Extra {
			fields[k] = v
		}
		list[i] = jinja.FromGoValue(fields)
	}
	data := map[string]jinja.Value{
		"messages":              jinja.NewList(list),
		"bos_token":             jinja.NewString(t.bos),
		"eos_token":             jinja.NewString(t.eos),
		"enable_thinking":       jinja.NewBool(t.reasoning != nil),
		"add_generation_prompt": jinja.NewBool(in.AddGenerationPrompt),
		// What llama.cpp's chat layer adds: today, as Llama 3.x's
		// templates and others read it.
		"date_string": jinja.NewString(Strftime(now, "%d %b %Y")),
		"datetime":    jinja.NewString(Strftime(now, "%b %d %Y")),
		"strftime_now": jinja.NewCallable("strftime_now", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			format := "%Y-%m-%d"
			if len(args) > 0 && args[0].IsString() {
				format = args[0].AsString()
			}
			return jinja.NewString(Strftime(now, format)), nil
		}),
	}
	preserve := true // llama-server's default preserve_reasoning
	for k, v := range in.Vars {
		data[k] = jinja.FromGoValue(v)
	}
	if p, ok := in.Vars["preserve_reasoning"].(bool); ok {
		preserve = p
	}
	// What llama.cpp's chat layer sets for preserve_reasoning, by the
	// names templates read it under.
	for k, v := range map[string]bool{"preserve_thinking": preserve, "clear_thinking": !preserve, "truncate_history_thinking": !preserve, "drop_thinking": !preserve} {
		if _, set := in.Vars[k]; !set {
			data[k] = jinja.NewBool(v)
		}
	}
	if effort, ok := in.Vars["reasoning_effort"].(string); ok {
		data["reasoning_strength"] = jinja.NewString(effort)
	}
	out, err := t.t.RenderValues(data)
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	if t.stripBOS && t.bos != "" {
		out = strings.TrimPrefix(out, t.bos)
	}
	return out, nil
}

// Strftime formats tm as Python's strftime formats it, for the directives
// chat templates use.
func Strftime(tm time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 == len(format) {
			b.WriteByte(c)
			continue
		}
		i++
		switch format[i] {
		case 'Y':
			fmt.Fprintf(&b, "%04d", tm.Year())
		case 'y':
			fmt.Fprintf(&b, "%02d", tm.Year()%100)
		case 'm':
			fmt.Fprintf(&b, "%02d", int(tm.Month()))
		case 'd':
			fmt.Fprintf(&b, "%02d", tm.Day())
		case 'e':
			fmt.Fprintf(&b, "%2d", tm.Day())
		case 'H':
			fmt.Fprintf(&b, "%02d", tm.Hour())
		case 'I':
			fmt.Fprintf(&b, "%02d", (tm.Hour()+11)%12+1)
		case 'M':
			fmt.Fprintf(&b, "%02d", tm.Minute())
		case 'S':
			fmt.Fprintf(&b, "%02d", tm.Second())
		case 'p':
			b.WriteString(tm.Format("PM"))
		case 'b', 'h':
			b.WriteString(tm.Format("Jan"))
		case 'B':
			b.WriteString(tm.Format("January"))
		case 'a':
			b.WriteString(tm.Format("Mon"))
		case 'A':
			b.WriteString(tm.Format("Monday"))
		case 'j':
			fmt.Fprintf(&b, "%03d", tm.YearDay())
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	return b.String()
}
