package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// OpenAI's Responses API (POST /v1/responses, /responses and their
// input_tokens), as llama-server answers it: the request is turned into a
// chat completion request and checked as one, so it has the same fields,
// limits and refusals; the answer is a response object, or its stream of
// named events.

// responsesItem is one item of a Responses request's input list: a
// message, whose content is a string or a list of parts. Tool calls, their
// outputs and reasoning items are other kinds of item.
type responsesItem struct {
	Type    string          `json:"type"`
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// responsesPart is a part of an input item's content.
type responsesPart struct {
	Type string  `json:"type"`
	Text *string `json:"text"`
}

// chatMessageOut is a message of the chat request a conversion writes.
type chatMessageOut struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// responsesMessage is the chat message of input item i, joined to the
// previous message when both are the assistant's (as llama-server merges
// them).
func responsesMessage(i int, item responsesItem) (chatMessageOut, error) {
	where := fmt.Sprintf("input[%d]", i)
	switch {
	case item.Type == "function_call" || item.Type == "function_call_output":
		return chatMessageOut{}, badRequest("%s: %q items are not read yet: %s", where, item.Type, whyTools)
	case item.Type == "reasoning":
		return chatMessageOut{}, badRequest("%s: reasoning items are not supported by kvtrim serve yet (it does not parse reasoning)", where)
	case item.Type != "" && item.Type != "message":
		return chatMessageOut{}, badRequest("Cannot determine type of 'item' (%s: type %q)", where, item.Type)
	}
	switch item.Role {
	case "user", "system", "developer", "assistant":
	case "":
		return chatMessageOut{}, badRequest("Cannot determine type of 'item' (%s has no role)", where)
	default:
		return chatMessageOut{}, badRequest("%s: role %q: give user, system, developer or assistant", where, item.Role)
	}
	var text string
	if json.Unmarshal(item.Content, &text) == nil {
		return chatMessageOut{item.Role, text}, nil
	}
	var parts []responsesPart
	if err := json.Unmarshal(item.Content, &parts); err != nil {
		return chatMessageOut{}, badRequest("%s.content: give a string or a list of content parts", where)
	}
	want := "input_text"
	if item.Role == "assistant" {
		want = "output_text"
	}
	for j, p := range parts {
		switch {
		case p.Type == "input_image" || p.Type == "input_file":
			return chatMessageOut{}, badRequest("%s.content[%d]: %q parts are not supported: kvtrim serve loads no multimodal projector", where, j, p.Type)
		case p.Type != want && p.Type != "input_text":
			return chatMessageOut{}, badRequest("%s.content[%d]: 'type' must be %q", where, j, want)
		case p.Text == nil:
			return chatMessageOut{}, badRequest("%s.content[%d]: a text part requires 'text'", where, j)
		}
		if j > 0 {
			text += "\n" // as chat content parts are joined
		}
		text += *p.Text
	}
	return chatMessageOut{item.Role, text}, nil
}

// chatBodyOfResponses turns a Responses request's JSON into a chat
// completion request's: input (a string, or a list of message items) and
// instructions become messages, max_output_tokens becomes max_tokens, and
// every other field is kept.
func chatBodyOfResponses(body []byte) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := decodeBody(body, &fields); err != nil {
		return nil, err
	}
	input, ok := fields["input"]
	if !ok {
		return nil, badRequest("'input' is required")
	}
	if given(fields["tools"]) {
		return nil, badRequest(`"tools": %s; the Responses API's function calls come later`, whyTools)
	}
	if prev := fields["previous_response_id"]; isSet(prev) && string(prev) != `""` {
		return nil, badRequest("llama.cpp does not support 'previous_response_id'.")
	}
	var msgs []chatMessageOut
	if raw, ok := fields["instructions"]; ok {
		var instructions string
		if isSet(raw) && json.Unmarshal(raw, &instructions) != nil {
			return nil, badRequest("'instructions' must be a string")
		}
		msgs = append(msgs, chatMessageOut{"system", instructions})
	}
	var text string
	var items []responsesItem
	switch {
	case json.Unmarshal(input, &text) == nil:
		msgs = append(msgs, chatMessageOut{"user", text})
	case json.Unmarshal(input, &items) == nil:
		for i, item := range items {
			m, err := responsesMessage(i, item)
			if err != nil {
				return nil, err
			}
			if n := len(msgs); n > 0 && m.Role == "assistant" && msgs[n-1].Role == "assistant" {
				msgs[n-1].Content += "\n" + m.Content
				continue
			}
			msgs = append(msgs, m)
		}
	default:
		return nil, badRequest("'input' must be a string or array of objects")
	}
	for _, k := range []string{"input", "instructions", "previous_response_id", "reasoning"} {
		delete(fields, k)
	}
	if raw, ok := fields["max_output_tokens"]; ok {
		delete(fields, "max_output_tokens")
		fields["max_tokens"] = raw
	}
	m, err := json.Marshal(msgs)
	if err != nil {
		return nil, err
	}
	fields["messages"] = m
	return json.Marshal(fields)
}

// parseResponses reads a Responses request as a chat request.
func (s *Server) parseResponses(w http.ResponseWriter, r *http.Request) (*Request, bool) {
	body, err := readBody(r)
	if err == nil {
		var chat []byte
		if chat, err = chatBodyOfResponses(body); err == nil {
			var req *Request
			if req, err = ParseChatRequest(chat, s.cfg.Sampling, *s.compression.Load()); err == nil {
				return req, true
			}
		}
	}
	writeError(w, err)
	return nil, false
}

// handleResponses answers POST /v1/responses.
func (s *Server) handleResponses(w http.ResponseWriter, r *http.Request, e *engine) {
	if req, ok := s.parseResponses(w, r); ok {
		s.generateChat(w, r, e, req, &responsesResponder{
			req: req, e: e, id: newID("resp_"), msgID: newID("msg_"), created: time.Now().Unix(),
		})
	}
}

// handleResponsesInputTokens answers POST /v1/responses/input_tokens.
func (s *Server) handleResponsesInputTokens(w http.ResponseWriter, r *http.Request, e *engine) {
	if req, ok := s.parseResponses(w, r); ok {
		countInputTokens(w, e, req, "response.input_tokens")
	}
}

// responsesResponder shapes Responses answers.
type responsesResponder struct {
	req     *Request
	e       *engine
	id      string // the response's
	msgID   string // its message's
	created int64
	// started is whether response.created is sent; text whether the
	// message's item and part are opened.
	started, text bool
}

// responseStatus is the short response object of the stream's
// in-progress events.
type responseStatus struct {
	ID     string `json:"id"`
	Object string `json:"object"`
	Status string `json:"status"`
}

// responseObject is the whole response.
type responseObject struct {
	CompletedAt int64          `json:"completed_at,omitempty"`
	CreatedAt   int64          `json:"created_at"`
	ID          string         `json:"id"`
	Model       string         `json:"model"`
	Object      string         `json:"object"`
	Output      []outputItem   `json:"output"`
	Status      string         `json:"status"`
	Usage       responsesUsage `json:"usage"`
	Kvtrim      *KVStats       `json:"kvtrim,omitempty"`
}

type outputItem struct {
	Content []outputText `json:"content"`
	ID      string       `json:"id"`
	Role    string       `json:"role"`
	Status  string       `json:"status"`
	Type    string       `json:"type"`
}

type outputText struct {
	Type        string `json:"type"`
	Annotations []any  `json:"annotations"`
	Logprobs    []any  `json:"logprobs"`
	Text        string `json:"text"`
}

type responsesUsage struct {
	InputTokens        int            `json:"input_tokens"`
	OutputTokens       int            `json:"output_tokens"`
	TotalTokens        int            `json:"total_tokens"`
	InputTokensDetails inputTokenInfo `json:"input_tokens_details"`
}

type inputTokenInfo struct {
	CachedTokens int `json:"cached_tokens"`
}

// output is the response's output items: the message, when anything was
// generated.
func (o *responsesResponder) output(r *result) []outputItem {
	if r.content == "" {
		return []outputItem{}
	}
	return []outputItem{{
		Content: []outputText{o.part(r.content)}, ID: o.msgID, Role: "assistant", Status: "completed", Type: "message",
	}}
}

func (o *responsesResponder) part(text string) outputText {
	return outputText{Type: "output_text", Annotations: []any{}, Logprobs: []any{}, Text: text}
}

func (o *responsesResponder) response(r *result, completed bool) responseObject {
	resp := responseObject{
		CreatedAt: time.Now().Unix(), ID: o.id, Model: o.e.name, Object: "response", Output: o.output(r), Status: "completed",
		Usage: responsesUsage{
			InputTokens: r.promptN, OutputTokens: r.predictedN, TotalTokens: r.promptN + r.predictedN,
			InputTokensDetails: inputTokenInfo{CachedTokens: r.cacheN},
		},
		Kvtrim: kvStatsOf(r.stats),
	}
	if completed {
		resp.CompletedAt = resp.CreatedAt
	}
	return resp
}

func (o *responsesResponder) whole(r *result) any { return o.response(r, true) }

// event is one named event of the stream, its type repeated in its data.
func (o *responsesResponder) event(typ string, fields map[string]any) namedEvent {
	fields["type"] = typ
	return namedEvent{typ, fields}
}

func (o *responsesResponder) inProgress(typ string) namedEvent {
	return o.event(typ, map[string]any{"response": responseStatus{ID: o.id, Object: "response", Status: "in_progress"}})
}

// begin is the stream's first events, once: response.created and
// response.in_progress.
func (o *responsesResponder) begin() []namedEvent {
	if o.started {
		return nil
	}
	o.started = true
	return []namedEvent{o.inProgress("response.created"), o.inProgress("response.in_progress")}
}

func (o *responsesResponder) delta(ev event) []any {
	events := o.begin()
	switch {
	case ev.progress != nil:
		if len(events) == 0 {
			events = append(events, o.inProgress("response.in_progress"))
		}
		events[len(events)-1].data.(map[string]any)["prompt_progress"] = ev.progress
	case ev.delta != "":
		if !o.text {
			o.text = true
			events = append(events,
				o.event("response.output_item.added", map[string]any{"item": outputItem{
					Content: []outputText{}, ID: o.msgID, Role: "assistant", Status: "in_progress", Type: "message",
				}}),
				o.event("response.content_part.added", map[string]any{"item_id": o.msgID, "part": map[string]string{"type": "output_text", "text": ""}}))
		}
		events = append(events, o.event("response.output_text.delta", map[string]any{"item_id": o.msgID, "delta": ev.delta}))
	}
	if ev.timings != nil && len(events) > 0 {
		events[len(events)-1].data.(map[string]any)["timings"] = ev.timings
	}
	return namedEvents(events)
}

func (o *responsesResponder) final(r *result) []any {
	events := o.begin()
	if r.content != "" {
		part := o.part(r.content)
		events = append(events,
			o.event("response.output_text.done", map[string]any{"item_id": o.msgID, "text": r.content}),
			o.event("response.content_part.done", map[string]any{"item_id": o.msgID, "part": part}),
			o.event("response.output_item.done", map[string]any{"item": o.output(r)[0]}))
	}
	events = append(events, o.event("response.completed", map[string]any{
		"response": o.response(r, false), "timings": timingsOf(r),
	}))
	return namedEvents(events)
}

// done is false: a Responses stream ends with response.completed.
func (o *responsesResponder) done() bool { return false }

func namedEvents(events []namedEvent) []any {
	out := make([]any, len(events))
	for i, e := range events {
		out[i] = e
	}
	return out
}
