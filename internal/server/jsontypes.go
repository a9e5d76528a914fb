package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// promptField is a prompt given as text, as token ids, or as an array
// holding one of those (llama-server's forms; several prompts in one
// request are refused).
type promptField struct {
	set    bool
	text   string
	tokens []int
	isToks bool
	// pieces is one prompt that mixes token ids and strings
	// ([1, 2, "text", 3]); batch is several prompts in one request
	// ([[1, 2], "text", {"prompt_string": ...}]).
	pieces []PromptPiece
	batch  []promptField
}

// PromptPiece is part of a prompt that mixes token ids and strings: a
// string (IsText) or token ids.
type PromptPiece struct {
	IsText bool
	Text   string
	Tokens []int
}

// UnmarshalJSON accepts "text", [1, 2, 3], ["text"], [[1, 2, 3]] or
// llama-server's object form {"prompt_string": "text"} (its
// "multimodal_data" is refused: kvtrim serve takes text only).
func (p *promptField) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	p.set = true
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &p.text)
	}
	if len(b) > 0 && b[0] == '{' {
		var o struct {
			PromptString *string         `json:"prompt_string"`
			Multimodal   json.RawMessage `json:"multimodal_data"`
		}
		switch err := json.Unmarshal(b, &o); {
		case err != nil || o.PromptString == nil:
			return errors.New(`prompt: an object prompt gives its text as "prompt_string"`)
		case isSet(o.Multimodal):
			return errors.New(`prompt: "multimodal_data" is not supported: kvtrim serve takes text only (no multimodal projector)`)
		}
		p.text = *o.PromptString
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(b, &items); err != nil {
		return errors.New("prompt: give a string or an array of token ids")
	}
	if len(items) == 0 {
		p.isToks = true
		return nil
	}
	numbers := 0
	for _, it := range items {
		if it = bytes.TrimSpace(it); len(it) > 0 && (it[0] == '-' || it[0] >= '0' && it[0] <= '9') {
			numbers++
		}
	}
	switch {
	case numbers > 0 && numbers < len(items):
		return p.mixed(items)
	case numbers == 0 && len(items) == 1:
		return p.UnmarshalJSON(items[0])
	case numbers == 0:
		// Several prompts, each a string, token ids, a mixed list or an
		// object; one request answers them all.
		p.batch = make([]promptField, len(items))
		for i, it := range items {
			if err := p.batch[i].UnmarshalJSON(it); err != nil {
				return fmt.Errorf("prompt[%d]: %w", i, err)
			}
			if p.batch[i].batch != nil {
				return fmt.Errorf("prompt[%d]: a prompt of a batch is itself a batch", i)
			}
		}
		return nil
	}
	p.isToks = true
	p.tokens = make([]int, 0, len(items))
	for i, it := range items {
		var t int
		if err := json.Unmarshal(it, &t); err != nil {
			return fmt.Errorf("prompt[%d]: give token ids as integers", i)
		}
		p.tokens = append(p.tokens, t)
	}
	return nil
}

// mixed reads one prompt of token ids and strings, in order.
func (p *promptField) mixed(items []json.RawMessage) error {
	for i, it := range items {
		var t int
		var text string
		switch {
		case json.Unmarshal(it, &t) == nil:
			if n := len(p.pieces); n > 0 && !p.pieces[n-1].IsText {
				p.pieces[n-1].Tokens = append(p.pieces[n-1].Tokens, t)
			} else {
				p.pieces = append(p.pieces, PromptPiece{Tokens: []int{t}})
			}
		case json.Unmarshal(it, &text) == nil:
			p.pieces = append(p.pieces, PromptPiece{IsText: true, Text: text})
		default:
			return fmt.Errorf("prompt[%d]: a prompt mixing token ids and strings holds only those", i)
		}
	}
	return nil
}

// stopField is a stop string or a list of them.
type stopField []string

// UnmarshalJSON accepts "text", ["a", "b"] or null; empty strings are
// dropped.
func (s *stopField) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*s = nil
		return nil
	}
	var list []string
	if len(b) > 0 && b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		list = []string{one}
	} else if err := json.Unmarshal(b, &list); err != nil {
		return errors.New("stop: give a string or an array of strings")
	}
	out := list[:0]
	for _, v := range list {
		if v != "" {
			out = append(out, v)
		}
	}
	*s = out
	return nil
}

// contentField is a chat message's content: a string, null, or OpenAI's
// array of parts, of which only text parts are supported.
type contentField struct {
	// text is the content, its parts joined by newlines as llama.cpp's
	// chat layer joins them for a template.
	text string
	// parts are the text parts, when the content came as parts.
	parts []string
	// image says the content has an image part, which a server without a
	// multimodal projector cannot read (errNoImages).
	image bool
}

// continued is the content as a continued final message carries it: its
// parts joined by blank lines, as llama.cpp's chat layer joins them.
func (c contentField) continued() string {
	if c.parts == nil {
		return c.text
	}
	return strings.Join(c.parts, "\n\n")
}

// UnmarshalJSON accepts "text", null or [{"type":"text","text":"..."}].
func (c *contentField) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case string(b) == "null":
		*c = contentField{}
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = contentField{text: s}
		return nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return errors.New("content: give a string or an array of text parts")
	}
	var sb strings.Builder
	texts := []string{}
	image := false
	for i, p := range parts {
		if p.Type == "image_url" {
			image = true
			continue
		}
		if p.Type != "text" {
			return fmt.Errorf("content[%d]: parts of type %q are not supported, only text", i, p.Type)
		}
		if i > 0 && sb.Len() > 0 {
			sb.WriteByte('\n') // as llama.cpp's chat layer joins text parts
		}
		sb.WriteString(p.Text)
		texts = append(texts, p.Text)
	}
	*c = contentField{text: sb.String(), parts: texts, image: image}
	return nil
}

// decodeBody unmarshals a JSON object into v, turning decoding errors into
// 400s that say what was wrong. Unknown fields are ignored.
func decodeBody(body []byte, v any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return badRequest("empty body: send a JSON object")
	}
	if trimmed[0] != '{' {
		return badRequest("malformed JSON: the body must be a JSON object")
	}
	err := json.Unmarshal(trimmed, v)
	if err == nil {
		return nil
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return badRequest("malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		field := strings.TrimPrefix(typ.Field, "samplingFields.")
		if field == "" {
			field = "body"
		}
		return badRequest("field %q: wrong type: want %s, got a JSON %s", field, kindName(typ.Type), typ.Value)
	}
	return badRequest("invalid request: %v", err)
}

// kindName says in JSON's words what a Go type wants.
func kindName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return t.String()
}
