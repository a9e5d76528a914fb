package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/internal/toolcall"
)

// Anthropic's Messages API (POST /v1/messages and
// /v1/messages/count_tokens), as llama-server answers it: the request is
// turned into an OpenAI chat request and checked as one, so it has the
// same fields, limits and refusals.

// anthropicBody is the part of a Messages request kvtrim reads; the rest
// (model, metadata) changes nothing.
type anthropicBody struct {
	System        json.RawMessage          `json:"system"`
	Messages      *[]anthropicMessage      `json:"messages"`
	MaxTokens     *int                     `json:"max_tokens"`
	Temperature   json.RawMessage          `json:"temperature"`
	TopP          json.RawMessage          `json:"top_p"`
	TopK          json.RawMessage          `json:"top_k"`
	StopSequences json.RawMessage          `json:"stop_sequences"`
	Stream        bool                     `json:"stream"`
	Tools         json.RawMessage          `json:"tools"`
	ToolChoice    json.RawMessage          `json:"tool_choice"`
	Thinking      *anthropicThinking       `json:"thinking"`
	Kvtrim        *kvtrim.CompressionPatch `json:"kvtrim"`
}

type anthropicMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type anthropicThinking struct {
	Type string `json:"type"`
}

// anthropicBlock is one block of a message's or the system's content.
type anthropicBlock struct {
	Type string `json:"type"`
	Text string `json:"text"`
	// A thinking block's reasoning.
	Thinking string `json:"thinking"`
	// A tool_use block's call, and a tool_result block's answer to one.
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
}

// anthropicText is a content field's text: a string, or its text blocks
// joined with sep (llama-server joins the system's with nothing). Other
// blocks are refused here: only messages carry tool and thinking blocks.
func anthropicText(raw json.RawMessage, where, sep string) (string, error) {
	s, blocks, err := anthropicContent(raw, where)
	if err != nil || blocks == nil {
		return s, err
	}
	text := ""
	for i, b := range blocks {
		if b.Type != "text" {
			return "", badRequest("%s[%d]: %q blocks are not supported here (text only)", where, i, b.Type)
		}
		if text != "" {
			text += sep
		}
		text += b.Text
	}
	return text, nil
}

// anthropicContent decodes a content field: its string (blocks nil), or
// its blocks; absent or null is the empty string.
func anthropicContent(raw json.RawMessage, where string) (string, []anthropicBlock, error) {
	if !isSet(raw) {
		return "", nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil, nil
	}
	blocks := []anthropicBlock{}
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return "", nil, badRequest("%s: give a string or an array of content blocks", where)
	}
	return "", blocks, nil
}

// oaiMessageIn is an OpenAI chat message, as a Messages request's
// messages become.
type oaiMessageIn struct {
	Role             string        `json:"role"`
	Content          any           `json:"content"`
	ToolCalls        []oaiToolCall `json:"tool_calls,omitempty"`
	ToolCallID       string        `json:"tool_call_id,omitempty"`
	ReasoningContent string        `json:"reasoning_content,omitempty"`
}

// anthropicMessages turns one Messages message into OpenAI messages, as
// llama-server does: its text (and thinking, and tool_use calls) as one
// message, then each tool_result as a tool message.
func anthropicMessages(m anthropicMessage, where string) ([]oaiMessageIn, error) {
	s, blocks, err := anthropicContent(m.Content, where)
	if err != nil {
		return nil, err
	}
	if blocks == nil {
		return []oaiMessageIn{{Role: m.Role, Content: s}}, nil
	}
	msg := oaiMessageIn{Role: m.Role}
	var texts []string
	images := 0
	var results []oaiMessageIn
	for i, b := range blocks {
		switch b.Type {
		case "text":
			texts = append(texts, b.Text)
		case "thinking":
			msg.ReasoningContent += b.Thinking
		case "image":
			images++ // an image_url part, as llama-server makes of it
		case "tool_use":
			c := oaiToolCall{ID: b.ID, Type: "function"}
			c.Function.Name = b.Name
			c.Function.Arguments = "{}"
			if isSet(b.Input) {
				c.Function.Arguments = string(compactJSON(b.Input))
			}
			msg.ToolCalls = append(msg.ToolCalls, c)
		case "tool_result":
			content, err := anthropicResult(b.Content, fmt.Sprintf("%s[%d].content", where, i))
			if err != nil {
				return nil, err
			}
			results = append(results, oaiMessageIn{Role: "tool", ToolCallID: b.ToolUseID, Content: content})
		default:
			return nil, badRequest("%s[%d]: %q blocks are not supported by kvtrim serve yet (it takes text, tool use and results, and thinking)", where, i, b.Type)
		}
	}
	var out []oaiMessageIn
	if len(texts) > 0 || images > 0 || len(msg.ToolCalls) > 0 || msg.ReasoningContent != "" {
		msg.Content = ""
		if len(texts)+images > 0 {
			msg.Content = contentParts(texts, images)
		}
		out = append(out, msg)
	}
	return append(out, results...), nil
}

// contentParts are OpenAI content parts: the texts, and an image_url part
// per image (their data matters not: a server without a multimodal
// projector refuses them, errNoImages).
func contentParts(texts []string, images int) []map[string]any {
	parts := make([]map[string]any, 0, len(texts)+images)
	for range images {
		parts = append(parts, map[string]any{"type": "image_url", "image_url": map[string]string{"url": ""}})
	}
	for _, t := range texts {
		parts = append(parts, map[string]any{"type": "text", "text": t})
	}
	return parts
}

// anthropicResult is a tool_result's content as a tool message's: a
// string, its text blocks joined, or, with images, content parts.
func anthropicResult(raw json.RawMessage, where string) (any, error) {
	s, blocks, err := anthropicContent(raw, where)
	if err != nil || blocks == nil {
		return s, err
	}
	var texts []string
	images := 0
	for i, b := range blocks {
		switch b.Type {
		case "text":
			texts = append(texts, b.Text)
		case "image":
			images++
		default:
			return nil, badRequest("%s[%d]: %q blocks are not supported in a tool result", where, i, b.Type)
		}
	}
	if images > 0 {
		return contentParts(texts, images), nil
	}
	return strings.Join(texts, ""), nil
}

// compactJSON is JSON without insignificant whitespace.
func compactJSON(raw json.RawMessage) []byte {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

// anthropicTools turns Messages tools ({name, description, input_schema})
// into OpenAI's, and its tool_choice ({"type": "auto" | "any" | "tool" |
// "none"}) into OpenAI's.
func anthropicTools(tools, choice json.RawMessage) (any, any, error) {
	var out []map[string]any
	if given(tools) {
		var list []struct {
			Name        string          `json:"name"`
			Description string          `json:"description"`
			InputSchema json.RawMessage `json:"input_schema"`
		}
		if err := json.Unmarshal(tools, &list); err != nil {
			return nil, nil, badRequest(`"tools": give a list of {"name", "input_schema"}: %v`, err)
		}
		for _, t := range list {
			schema := t.InputSchema
			if !isSet(schema) {
				schema = json.RawMessage(`{"type":"object"}`)
			}
			out = append(out, map[string]any{"type": "function", "function": map[string]any{
				"name": t.Name, "description": t.Description, "parameters": schema}})
		}
	}
	if !isSet(choice) {
		return out, nil, nil
	}
	var c struct {
		Type string `json:"type"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal(choice, &c); err != nil {
		return nil, nil, badRequest(`"tool_choice": give {"type": "auto" | "any" | "tool" | "none"}`)
	}
	switch c.Type {
	case "auto", "none":
		return out, c.Type, nil
	case "any":
		return out, toolsRequired, nil
	case "tool":
		return out, map[string]any{"type": "function", "function": map[string]string{"name": c.Name}}, nil
	}
	return nil, nil, badRequest(`"tool_choice": type %q: give "auto", "any", "tool" or "none"`, c.Type)
}

// chatBodyOf turns a Messages request into an OpenAI chat request's JSON.
func (b *anthropicBody) chatBodyOf() ([]byte, error) {
	if b.Messages == nil {
		return nil, badRequest(`"messages" is required`)
	}
	var msgs []oaiMessageIn
	if isSet(b.System) {
		system, err := anthropicText(b.System, "system", "")
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, oaiMessageIn{Role: "system", Content: system})
	}
	for i, m := range *b.Messages {
		out, err := anthropicMessages(m, fmt.Sprintf("messages[%d].content", i))
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, out...)
	}
	if len(msgs) == 0 {
		// llama-server takes an empty conversation too.
		msgs = append(msgs, oaiMessageIn{Role: "user", Content: ""})
	}
	chat := map[string]any{"messages": msgs, "stream": b.Stream}
	if b.MaxTokens != nil {
		chat["max_tokens"] = *b.MaxTokens
	}
	tools, choice, err := anthropicTools(b.Tools, b.ToolChoice)
	if err != nil {
		return nil, err
	}
	if tools != nil {
		chat["tools"] = tools
	}
	if choice != nil {
		chat["tool_choice"] = choice
	}
	for name, raw := range map[string]json.RawMessage{
		"temperature": b.Temperature, "top_p": b.TopP, "top_k": b.TopK, "stop": b.StopSequences,
	} {
		if isSet(raw) {
			chat[name] = raw
		}
	}
	if b.Kvtrim != nil {
		chat["kvtrim"] = b.Kvtrim
	}
	return json.Marshal(chat)
}

// parseAnthropic reads a Messages request as a chat request.
func (s *Server) parseAnthropic(w http.ResponseWriter, r *http.Request) (*Request, bool) {
	body, err := readBody(r)
	if err == nil {
		var b anthropicBody
		if err = decodeBody(body, &b); err == nil {
			var chat []byte
			if chat, err = b.chatBodyOf(); err == nil {
				var req *Request
				if req, err = ParseChatRequest(chat, s.cfg.Sampling, *s.compression.Load()); err == nil {
					req.Chat.Thinking = b.Thinking != nil && b.Thinking.Type == "enabled"
					return req, true
				}
			}
		}
	}
	writeError(w, err)
	return nil, false
}

// handleAnthropic answers POST /v1/messages.
func (s *Server) handleAnthropic(w http.ResponseWriter, r *http.Request, e *engine) {
	if req, ok := s.parseAnthropic(w, r); ok {
		s.generateChat(w, r, e, req, &anthropicResponder{e: e, req: req, id: newID("msg_"), created: time.Now().Unix()})
	}
}

// handleAnthropicCountTokens answers POST /v1/messages/count_tokens: the
// prompt's tokens once rendered with the chat template.
func (s *Server) handleAnthropicCountTokens(w http.ResponseWriter, r *http.Request, e *engine) {
	if req, ok := s.parseAnthropic(w, r); ok {
		countInputTokens(w, e, req, "")
	}
}

// handleChatInputTokens answers POST /v1/chat/completions/input_tokens:
// a chat request's prompt tokens, as llama-server counts them.
func (s *Server) handleChatInputTokens(w http.ResponseWriter, r *http.Request, e *engine) {
	if req, ok := s.parse(w, r, ParseChatRequest); ok {
		countInputTokens(w, e, req, "response.input_tokens")
	}
}

// countInputTokens answers {"input_tokens": n} for a chat request, with
// an "object" field when object is set (llama-server's OpenAI forms).
func countInputTokens(w http.ResponseWriter, e *engine, req *Request, object string) {
	prompt, err := e.render(req.Chat)
	if err == nil {
		req.Prompt = prompt
		var tokens []kvtrim.Token
		if tokens, err = e.promptTokens(req); err == nil {
			answer := map[string]any{"input_tokens": len(tokens)}
			if object != "" {
				answer["object"] = object
			}
			writeJSON(w, http.StatusOK, answer)
			return
		}
	}
	writeError(w, err)
}

// anthropicResponder shapes Messages answers.
type anthropicResponder struct {
	e       *engine
	req     *Request
	id      string
	created int64
	started bool // message_start is sent
	// kind is the open content block's ("text", "thinking", "" for none)
	// and index its index, or the next one's when none is open.
	kind  string
	index int
	// answer splits a streamed answer's reasoning and tool calls out
	// (made at its first delta).
	answer *answerStream
}

// anthropicStop is Anthropic's name for how generation ended, and the stop
// string that ended it.
func anthropicStop(r *result) (reason string, sequence *string) {
	switch r.stopType {
	case stopWord:
		w := r.stoppingWord
		return "end_turn", &w
	case stopEOS:
		return "end_turn", nil
	}
	return "max_tokens", nil
}

type anthropicUsage struct {
	CacheRead int `json:"cache_read_input_tokens"`
	Input     int `json:"input_tokens"`
	Output    int `json:"output_tokens"`
}

type anthropicMessageOut struct {
	ID           string         `json:"id"`
	Type         string         `json:"type"`
	Role         string         `json:"role"`
	Content      []any          `json:"content"`
	Model        string         `json:"model"`
	StopReason   *string        `json:"stop_reason"`
	StopSequence *string        `json:"stop_sequence"`
	Usage        anthropicUsage `json:"usage"`
	Kvtrim       *KVStats       `json:"kvtrim,omitempty"`
}

// anthropicTextOut and anthropicToolUse are an answer's content blocks.
type anthropicTextOut struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type anthropicToolUse struct {
	Type  string          `json:"type"`
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

// toolUses are calls as tool_use blocks, their ids in Anthropic's form.
func toolUses(calls []toolcall.Call) []anthropicToolUse {
	out := make([]anthropicToolUse, len(calls))
	for i, c := range calls {
		out[i] = anthropicToolUse{Type: "tool_use", ID: "toolu_" + strings.TrimPrefix(c.ID, "call_"), Name: c.Name, Input: json.RawMessage(c.Arguments)}
	}
	return out
}

func (a *anthropicResponder) whole(r *result) any {
	reason, seq := anthropicStop(r)
	content := []any{}
	reasoningText, text, calls := splitAnswer(a.req, r.content)
	if reasoningText != "" {
		// First, as llama-server: a local model signs nothing.
		content = append(content, map[string]string{"type": "thinking", "thinking": reasoningText, "signature": ""})
	}
	if len(calls) > 0 {
		reason = "tool_use"
	}
	if text != "" {
		content = append(content, anthropicTextOut{Type: "text", Text: text})
	}
	for _, u := range toolUses(calls) {
		content = append(content, u)
	}
	return anthropicMessageOut{
		ID: a.id, Type: "message", Role: "assistant", Content: content, Model: a.e.name,
		StopReason: &reason, StopSequence: seq,
		Usage:  anthropicUsage{CacheRead: r.cacheN, Input: r.promptN - r.cacheN, Output: r.predictedN},
		Kvtrim: kvStatsOf(r.stats),
	}
}

// begin is the stream's first events: message_start (with the prompt's
// usage) and, unless the answer's reasoning is read (its blocks then open
// as they come), the text block's start.
func (a *anthropicResponder) begin(promptN, cacheN int) []any {
	if a.started {
		return nil
	}
	a.started = true
	msg := anthropicMessageOut{
		ID: a.id, Type: "message", Role: "assistant", Content: []any{}, Model: a.e.name,
		Usage: anthropicUsage{CacheRead: cacheN, Input: promptN - cacheN},
	}
	out := []any{namedEvent{"message_start", map[string]any{"type": "message_start", "message": msg}}}
	if a.req.reasoning == nil {
		out = append(out, a.open("text")...)
	}
	return out
}

// open makes kind ("thinking" or "text") the open block: the open one's
// stop and the new one's start, or nothing if it is open already.
func (a *anthropicResponder) open(kind string) []any {
	if a.kind == kind {
		return nil
	}
	out := a.closeBlock()
	a.kind = kind
	var block any = anthropicTextOut{Type: "text"}
	if kind == "thinking" {
		block = map[string]string{"type": "thinking", "thinking": ""}
	}
	return append(out, namedEvent{"content_block_start", map[string]any{"type": "content_block_start", "index": a.index, "content_block": block}})
}

// closeBlock stops the open block, if any.
func (a *anthropicResponder) closeBlock() []any {
	if a.kind == "" {
		return nil
	}
	a.kind = ""
	a.index++
	return []any{namedEvent{"content_block_stop", map[string]any{"type": "content_block_stop", "index": a.index - 1}}}
}

func (a *anthropicResponder) delta(ev event) []any {
	out := a.begin(ev.promptN, ev.cacheN)
	if ev.progress != nil {
		return out // Anthropic's stream has no progress events
	}
	if a.answer == nil {
		a.answer = newAnswerStream(a.req)
	}
	return append(out, a.pieces(a.answer.write(ev.delta))...)
}

// pieces are the events for a piece of reasoning and of text (split by
// answerStream), each in its block.
func (a *anthropicResponder) pieces(reasoningText, text string) []any {
	var out []any
	if reasoningText != "" {
		out = append(out, a.open("thinking")...)
		out = append(out, namedEvent{"content_block_delta", map[string]any{
			"type": "content_block_delta", "index": a.index, "delta": map[string]string{"type": "thinking_delta", "thinking": reasoningText},
		}})
	}
	if text != "" {
		out = append(out, a.textDelta(text)...)
	}
	return out
}

// textDelta are a stream's events carrying text: the text block's start
// if another is open, and the delta.
func (a *anthropicResponder) textDelta(text string) []any {
	out := a.open("text")
	return append(out, namedEvent{"content_block_delta", map[string]any{
		"type": "content_block_delta", "index": a.index, "delta": map[string]string{"type": "text_delta", "text": text},
	}})
}

func (a *anthropicResponder) final(r *result) []any {
	reason, seq := anthropicStop(r)
	out := a.begin(r.promptN, r.cacheN)
	var calls []toolcall.Call
	if a.answer != nil {
		var reasoningText, text string
		reasoningText, text, calls = a.answer.finish()
		out = append(out, a.pieces(reasoningText, text)...)
	}
	out = append(out, a.closeBlock()...)
	// Each call a block of its own after the others: its start, its input
	// as one JSON delta, its stop.
	for _, u := range toolUses(calls) {
		input := u.Input
		u.Input = json.RawMessage(`{}`)
		out = append(out,
			namedEvent{"content_block_start", map[string]any{"type": "content_block_start", "index": a.index, "content_block": u}},
			namedEvent{"content_block_delta", map[string]any{"type": "content_block_delta", "index": a.index,
				"delta": map[string]string{"type": "input_json_delta", "partial_json": string(input)}}},
			namedEvent{"content_block_stop", map[string]any{"type": "content_block_stop", "index": a.index}})
		a.index++
		reason = "tool_use"
	}
	return append(out,
		namedEvent{"message_delta", map[string]any{
			"type": "message_delta", "delta": map[string]any{"stop_reason": reason, "stop_sequence": seq},
			"usage": map[string]int{"output_tokens": r.predictedN},
		}},
		namedEvent{"message_stop", map[string]any{"type": "message_stop"}},
	)
}

func (a *anthropicResponder) done() bool { return false }
