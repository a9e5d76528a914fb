package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/kvtrim/kvtrim"
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
}

// anthropicText is a content field's text: a string, or its text blocks
// joined with sep (llama-server joins a message's with newlines, the
// system's with nothing). Other blocks (images, tool use and results,
// thinking) need features kvtrim serve does not have yet, and are refused.
func anthropicText(raw json.RawMessage, where, sep string) (string, error) {
	if !isSet(raw) {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var blocks []anthropicBlock
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return "", badRequest("%s: give a string or an array of content blocks", where)
	}
	text := ""
	for i, b := range blocks {
		if b.Type != "text" {
			return "", badRequest("%s[%d]: %q blocks are not supported by kvtrim serve yet (it takes text; tools, images and thinking come later)", where, i, b.Type)
		}
		if text != "" {
			text += sep
		}
		text += b.Text
	}
	return text, nil
}

// chatBodyOf turns a Messages request into an OpenAI chat request's JSON.
func (b *anthropicBody) chatBodyOf() ([]byte, error) {
	if b.Messages == nil {
		return nil, badRequest(`"messages" is required`)
	}
	if b.Thinking != nil && b.Thinking.Type != "" && b.Thinking.Type != "disabled" {
		return nil, badRequest(`"thinking": kvtrim serve does not parse reasoning yet; leave it out or disable it`)
	}
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	var msgs []message
	if isSet(b.System) {
		system, err := anthropicText(b.System, "system", "")
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, message{"system", system})
	}
	for i, m := range *b.Messages {
		text, err := anthropicText(m.Content, fmt.Sprintf("messages[%d].content", i), "\n")
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, message{m.Role, text})
	}
	if len(msgs) == 0 {
		// llama-server takes an empty conversation too.
		msgs = append(msgs, message{"user", ""})
	}
	if given(b.Tools) {
		return nil, badRequest(`"tools": kvtrim serve reads tool calls in OpenAI's chat API (/v1/chat/completions); Anthropic's tool_use blocks come later`)
	}
	chat := map[string]any{"messages": msgs, "stream": b.Stream}
	if b.MaxTokens != nil {
		chat["max_tokens"] = *b.MaxTokens
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
		s.generateChat(w, r, e, req, &anthropicResponder{e: e, id: newID("msg_"), created: time.Now().Unix()})
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
	id      string
	created int64
	started bool // message_start and the text block's start are sent
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
	ID           string           `json:"id"`
	Type         string           `json:"type"`
	Role         string           `json:"role"`
	Content      []anthropicBlock `json:"content"`
	Model        string           `json:"model"`
	StopReason   *string          `json:"stop_reason"`
	StopSequence *string          `json:"stop_sequence"`
	Usage        anthropicUsage   `json:"usage"`
	Kvtrim       *KVStats         `json:"kvtrim,omitempty"`
}

func (a *anthropicResponder) whole(r *result) any {
	reason, seq := anthropicStop(r)
	content := []anthropicBlock{}
	if r.content != "" {
		content = append(content, anthropicBlock{Type: "text", Text: r.content})
	}
	return anthropicMessageOut{
		ID: a.id, Type: "message", Role: "assistant", Content: content, Model: a.e.name,
		StopReason: &reason, StopSequence: seq,
		Usage:  anthropicUsage{CacheRead: r.cacheN, Input: r.promptN - r.cacheN, Output: r.predictedN},
		Kvtrim: kvStatsOf(r.stats),
	}
}

// begin is the stream's first events: message_start (with the prompt's
// usage) and the text block's start.
func (a *anthropicResponder) begin(promptN, cacheN int) []any {
	if a.started {
		return nil
	}
	a.started = true
	msg := anthropicMessageOut{
		ID: a.id, Type: "message", Role: "assistant", Content: []anthropicBlock{}, Model: a.e.name,
		Usage: anthropicUsage{CacheRead: cacheN, Input: promptN - cacheN},
	}
	return []any{
		namedEvent{"message_start", map[string]any{"type": "message_start", "message": msg}},
		namedEvent{"content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": anthropicBlock{Type: "text"}}},
	}
}

func (a *anthropicResponder) delta(ev event) []any {
	out := a.begin(ev.promptN, ev.cacheN)
	if ev.progress != nil {
		return out // Anthropic's stream has no progress events
	}
	if ev.delta == "" {
		return out
	}
	return append(out, namedEvent{"content_block_delta", map[string]any{
		"type": "content_block_delta", "index": 0, "delta": map[string]string{"type": "text_delta", "text": ev.delta},
	}})
}

func (a *anthropicResponder) final(r *result) []any {
	reason, seq := anthropicStop(r)
	out := a.begin(r.promptN, r.cacheN)
	return append(out,
		namedEvent{"content_block_stop", map[string]any{"type": "content_block_stop", "index": 0}},
		namedEvent{"message_delta", map[string]any{
			"type": "message_delta", "delta": map[string]any{"stop_reason": reason, "stop_sequence": seq},
			"usage": map[string]int{"output_tokens": r.predictedN},
		}},
		namedEvent{"message_stop", map[string]any{"type": "message_stop"}},
	)
}

func (a *anthropicResponder) done() bool { return false }
