package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"strings"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// Request is a parsed and validated generation request, before it is
// tokenized.
type Request struct {
	// Prompt is the text to complete; PromptTokens, when set, are token ids
	// given instead (HasTokens). Chat requests leave both empty and set
	// Messages, which the server renders with the chat template.
	Prompt       string
	PromptTokens []int
	HasTokens    bool
	// PromptPieces, when set, is a prompt mixing token ids and strings;
	// Batch, when set, is several prompts in one request, each a request
	// of its own with this one's settings.
	PromptPieces []PromptPiece
	Batch        []*Request
	// Chat is a chat request's conversation, and ToolUse the tools it
	// offers.
	Chat
	ToolUse ToolUse
	// ReasoningFormat is the request's reasoning_format, "" for the
	// server's; reasoning is how its answer is split (set when the chat is
	// rendered).
	ReasoningFormat string
	reasoning       *reasoningUse
	// Sampling is the server's defaults with the request's overrides.
	Sampling Sampling
	// Stop strings end generation and are trimmed from the content.
	Stop []string
	// Stream answers with server-sent events.
	Stream bool
	// IncludeUsage asks for a usage chunk at the end of an OpenAI stream;
	// TimingsPerToken for the timings so far with every streamed chunk.
	IncludeUsage, TimingsPerToken bool
	// ReturnProgress asks a stream for the prompt's progress as it is
	// decoded (prompt_progress chunks).
	ReturnProgress bool
	// Choices is OpenAI's n: how many answers to generate (1 when absent).
	Choices   int
	IgnoreEOS bool
	// ReturnTokens adds the generated token ids to /completion responses.
	ReturnTokens bool
	// Compression is the server's, with the request's "kvtrim" overrides.
	Compression kvtrim.Compression
	// Slot is the slot the request asks for (id_slot), or -1: the server
	// picks one (see pool.pick).
	Slot int
	// NProbs asks for each generated token's log-probability and the
	// NProbs most likely tokens' (n_probs, logprobs, top_logprobs);
	// PostSamplingProbs for their probabilities after the sampler chain
	// instead (post_sampling_probs).
	NProbs            int
	PostSamplingProbs bool
	// Verbose adds llama-server's __verbose object, the native answer,
	// to OpenAI-shaped ones; nil takes the server's --verbose.
	Verbose *bool
	// Discard is the cells a context shift drops (n_discard; 0: half of
	// what follows Sampling.Keep).
	Discard int
	// ResponseFields, when set, keeps only these fields ("a/b" for a
	// nested one) of a native answer (response_fields).
	ResponseFields []string
	// LogitBiasJSON is the request's logit_bias, as given; the engine
	// resolves it (strings are tokenized) into LogitBias, to which
	// IgnoreEOS adds the end-of-generation tokens, banned, as llama-server
	// does.
	LogitBiasJSON json.RawMessage
	LogitBias     []bindings.LogitBias
}

// maxChoices bounds n, the answers one request may ask for.
const maxChoices = 16

// samplingFields are the generation settings every kind of request
// shares, each a pointer so that an absent field keeps the default.
type samplingFields struct {
	NPredict            *int                     `json:"n_predict"`
	MaxTokens           *int                     `json:"max_tokens"`
	MaxCompletionTokens *int                     `json:"max_completion_tokens"`
	Temperature         *float64                 `json:"temperature"`
	TopK                *int                     `json:"top_k"`
	TopP                *float64                 `json:"top_p"`
	MinP                *float64                 `json:"min_p"`
	RepeatLastN         *int                     `json:"repeat_last_n"`
	RepeatPenalty       *float64                 `json:"repeat_penalty"`
	FrequencyPenalty    *float64                 `json:"frequency_penalty"`
	PresencePenalty     *float64                 `json:"presence_penalty"`
	Seed                *int64                   `json:"seed"`
	Stop                stopField                `json:"stop"`
	Stream              bool                     `json:"stream"`
	StreamOptions       *streamOptions           `json:"stream_options"`
	IgnoreEOS           bool                     `json:"ignore_eos"`
	ReturnTokens        bool                     `json:"return_tokens"`
	Kvtrim              *kvtrim.CompressionPatch `json:"kvtrim"`
	IDSlot              *int                     `json:"id_slot"`
	// NProbs is /completion's n_probs. Logprobs is a count for the
	// completion endpoints (n_probs' OpenAI name) and a switch for chat,
	// whose count is TopLogprobs.
	NProbs            *int            `json:"n_probs"`
	Logprobs          json.RawMessage `json:"logprobs"`
	TopLogprobs       *int            `json:"top_logprobs"`
	PostSamplingProbs bool            `json:"post_sampling_probs"`
	LogitBias         json.RawMessage `json:"logit_bias"`
	Verbose           *bool           `json:"verbose"`
	NKeep             *int            `json:"n_keep"`
	Grammar           *string         `json:"grammar"`
	TopNSigma         *float32        `json:"top_n_sigma"`
	TypicalP          *float32        `json:"typical_p"`
	XTCProbability    *float32        `json:"xtc_probability"`
	XTCThreshold      *float32        `json:"xtc_threshold"`
	DynatempRange     *float32        `json:"dynatemp_range"`
	DynatempExponent  *float32        `json:"dynatemp_exponent"`
	DRYMultiplier     *float32        `json:"dry_multiplier"`
	DRYBase           *float32        `json:"dry_base"`
	DRYAllowedLength  *int            `json:"dry_allowed_length"`
	DRYPenaltyLastN   *int            `json:"dry_penalty_last_n"`
	DRYBreakers       []string        `json:"dry_sequence_breakers"`
	Mirostat          *int            `json:"mirostat"`
	MirostatTau       *float32        `json:"mirostat_tau"`
	MirostatEta       *float32        `json:"mirostat_eta"`
	MinKeep           *int            `json:"min_keep"`
	Samplers          json.RawMessage `json:"samplers"`
	NDiscard          *int            `json:"n_discard"`
	ResponseFields    []string        `json:"response_fields"`
	TimingsPerToken   bool            `json:"timings_per_token"`
	ReturnProgress    bool            `json:"return_progress"`
	N                 *int            `json:"n"`
	NCmpl             *int            `json:"n_cmpl"` // llama-server's name; n is its alias
	structuredFields
	toolFields
	// llama-server's fields kvtrim serve takes only at their neutral
	// values.
	unbuiltFields
}

// completionProbs is the number of top tokens a completion request asks
// for with each generated token: n_probs, or logprobs when n_probs is
// absent.
func (f *samplingFields) completionProbs() (int, error) {
	n := 0
	switch {
	case f.NProbs != nil:
		n = *f.NProbs
	case isSet(f.Logprobs):
		if err := json.Unmarshal(f.Logprobs, &n); err != nil {
			return 0, badRequest(`"logprobs": give the number of top tokens to return with each generated token`)
		}
	}
	return n, f.checkProbs(n, "n_probs")
}

// chatProbs is the number of top tokens a chat request asks for: with
// "logprobs": true, top_logprobs (20 when absent, as llama-server).
func (f *samplingFields) chatProbs() (int, error) {
	on := false
	if isSet(f.Logprobs) {
		if err := json.Unmarshal(f.Logprobs, &on); err != nil {
			return 0, badRequest(`"logprobs": give true or false`)
		}
	}
	switch {
	case !on && f.TopLogprobs != nil:
		return 0, badRequest(`"top_logprobs" requires "logprobs": true`)
	case !on:
		return 0, nil
	case f.TopLogprobs == nil:
		return 20, f.checkProbs(20, "top_logprobs")
	}
	return *f.TopLogprobs, f.checkProbs(*f.TopLogprobs, "top_logprobs")
}

// checkProbs validates a count of top tokens.
func (f *samplingFields) checkProbs(n int, name string) error {
	if n < 0 || n > maxProbs {
		return badRequest("%s %d: give between 0 and %d", name, n, maxProbs)
	}
	return nil
}

// isSet reports whether a raw JSON field was given and is not null.
func isSet(raw json.RawMessage) bool {
	b := bytes.TrimSpace(raw)
	return len(b) > 0 && string(b) != "null"
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// completionBody is POST /completion's and /v1/completions' JSON.
type completionBody struct {
	Prompt promptField `json:"prompt"`
	samplingFields
}

// Chat is a chat request's conversation and how its prompt ends.
type Chat struct {
	Messages []bindings.ChatMessage
	// NoGenerationPrompt asks the prompt to end without the opening of the
	// assistant's turn (add_generation_prompt false).
	NoGenerationPrompt bool
	// ContinueFinal asks the prompt to end inside the final message,
	// continuing its text, Continued (continue_final_message). With the
	// server's --prefill-assistant (its default), a final assistant
	// message is continued without asking.
	ContinueFinal bool
	Continued     string
	// Kwargs are chat_template_kwargs: more variables for a Jinja
	// template.
	Kwargs map[string]json.RawMessage
	// Tools is the request's tool list, which a Jinja template renders
	// into the prompt.
	Tools json.RawMessage
	// Extra is, for each message, what a Jinja template reads beyond its
	// role and content (tool calls, reasoning), or nil.
	Extra []map[string]any
	// Thinking is Anthropic's extended thinking, asked for: answered only
	// by a model whose template does not reason, since its budget cannot
	// be kept.
	Thinking bool
}

// errNoImages is llama-server's answer to an image sent to a server
// without a multimodal projector: a 500, with its message.
var errNoImages = &APIError{Code: http.StatusInternalServerError, Type: typeServer,
	Message: "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj"}

// chatBody is POST /v1/chat/completions' (and /apply-template's) JSON.
type chatBody struct {
	Messages []chatMessage `json:"messages"`
	// AddGenerationPrompt, true when absent, ends the prompt with the
	// opening of the assistant's turn.
	AddGenerationPrompt  *bool                      `json:"add_generation_prompt"`
	ReasoningFormat      string                     `json:"reasoning_format"`
	ReasoningEffort      *string                    `json:"reasoning_effort"`
	ContinueFinalMessage json.RawMessage            `json:"continue_final_message"`
	TemplateKwargs       map[string]json.RawMessage `json:"chat_template_kwargs"`
	samplingFields
}

// chat reads the conversation and how its prompt ends, with
// llama-server's checks.
func (b *chatBody) chat() (Chat, error) {
	msgs, err := parseMessages(b.Messages)
	if err != nil {
		return Chat{}, err
	}
	for _, m := range b.Messages {
		if m.Content.image {
			return Chat{}, errNoImages
		}
	}
	c := Chat{Messages: msgs, Kwargs: b.TemplateKwargs, Continued: b.Messages[len(b.Messages)-1].Content.continued()}
	if raw, ok := c.Kwargs["enable_thinking"]; ok && string(raw) != "true" && string(raw) != "false" {
		return Chat{}, badRequest(`invalid type for "enable_thinking" (expected boolean, got %s)`, raw)
	}
	if e := b.ReasoningEffort; e != nil && *e != "" {
		// OpenAI's reasoning_effort, as llama-server reads it: "none"
		// turns thinking off, another level goes to the template.
		kw := maps.Clone(c.Kwargs)
		if kw == nil {
			kw = map[string]json.RawMessage{}
		}
		if *e == "none" {
			kw["enable_thinking"] = json.RawMessage("false")
			delete(kw, "reasoning_effort")
		} else {
			kw["reasoning_effort"], _ = json.Marshal(*e)
		}
		c.Kwargs = kw
	}
	if given(b.Tools) {
		c.Tools = b.Tools
	}
	for i := range b.Messages {
		x, err := b.Messages[i].extra(i)
		if err != nil {
			return Chat{}, err
		}
		if x != nil && c.Extra == nil {
			c.Extra = make([]map[string]any, len(b.Messages))
		}
		if x != nil {
			c.Extra[i] = x
		}
	}
	c.NoGenerationPrompt = b.AddGenerationPrompt != nil && !*b.AddGenerationPrompt
	var cont any
	if !isNull(b.ContinueFinalMessage) && json.Unmarshal(b.ContinueFinalMessage, &cont) != nil {
		return Chat{}, badRequest(`"continue_final_message": give true, "content" or false`)
	}
	switch cont {
	case true, "content":
		c.ContinueFinal = true
	case "reasoning_content":
		return Chat{}, badRequest(`"continue_final_message": "reasoning_content": kvtrim serve does not parse reasoning yet; continue the content`)
	}
	if c.ContinueFinal && !c.NoGenerationPrompt {
		return Chat{}, badRequest("Cannot set both add_generation_prompt and continue_final_message to true.")
	}
	return c, nil
}

type chatMessage struct {
	Role    *string      `json:"role"`
	Content contentField `json:"content"`
	// An assistant's calls, and a tool message's answer to one: a Jinja
	// template renders them.
	ToolCalls  json.RawMessage `json:"tool_calls"`
	ToolCallID string          `json:"tool_call_id"`
	Name       string          `json:"name"`
	// ReasoningContent is an earlier answer's reasoning.
	ReasoningContent string `json:"reasoning_content"`
}

// extra is what a Jinja template reads of a message beyond its role and
// content: its tool calls (arguments as objects, as templates expect
// them), the call a tool message answers, its name; nil when none.
func (m *chatMessage) extra(i int) (map[string]any, error) {
	x := map[string]any{}
	if given(m.ToolCalls) {
		var calls []map[string]any
		if err := json.Unmarshal(m.ToolCalls, &calls); err != nil {
			return nil, badRequest("messages[%d].tool_calls: give a list of calls: %v", i, err)
		}
		for _, c := range calls {
			if fn, ok := c["function"].(map[string]any); ok {
				if args, ok := fn["arguments"].(string); ok {
					var obj map[string]any
					if json.Unmarshal([]byte(args), &obj) == nil {
						fn["arguments"] = obj
					}
				}
			}
		}
		x["tool_calls"] = calls
	}
	if m.ToolCallID != "" {
		x["tool_call_id"] = m.ToolCallID
	}
	if m.Name != "" {
		x["name"] = m.Name
	}
	if m.ReasoningContent != "" {
		x["reasoning_content"] = m.ReasoningContent
	}
	if len(x) == 0 {
		return nil, nil
	}
	return x, nil
}

// ParseCompletionRequest parses the body of a completion request (native
// or OpenAI) over the server's defaults. Errors are 400 APIErrors.
func ParseCompletionRequest(body []byte, def Sampling, comp kvtrim.Compression) (*Request, error) {
	var b completionBody
	if err := decodeBody(body, &b); err != nil {
		return nil, err
	}
	if !b.Prompt.set {
		return nil, badRequest(`"prompt" is missing: give the text to complete`)
	}
	r, err := b.samplingFields.request(def, comp)
	if err != nil {
		return nil, err
	}
	if r.NProbs, err = b.completionProbs(); err != nil {
		return nil, err
	}
	if u, err := b.toolUse(nil); err != nil || u.active() || u.Choice == toolsRequired {
		return nil, badRequest(`"tools", "tool_choice": %s`, whyTools)
	}
	schema, err := b.completionSchema(b.Grammar)
	if err != nil {
		return nil, err
	}
	if err := r.constrain(schema); err != nil {
		return nil, err
	}
	if b.Prompt.batch == nil {
		return r, r.setPrompt(&b.Prompt)
	}
	switch {
	case r.Choices > 1:
		return nil, badRequest("several prompts with \"n\" %d: give one or the other", r.Choices)
	}
	for i := range b.Prompt.batch {
		sub := *r
		sub.Batch = nil
		if err := sub.setPrompt(&b.Prompt.batch[i]); err != nil {
			return nil, badRequest("prompt[%d]: %v", i, err)
		}
		r.Batch = append(r.Batch, &sub)
	}
	return r, nil
}

// setPrompt takes one prompt of the request's "prompt" field.
func (r *Request) setPrompt(p *promptField) error {
	r.Prompt, r.PromptTokens, r.HasTokens, r.PromptPieces = p.text, p.tokens, p.isToks, p.pieces
	switch {
	case len(r.PromptPieces) > 0:
		for _, piece := range r.PromptPieces {
			if err := checkIDs(piece.Tokens); err != nil {
				return err
			}
		}
	case r.HasTokens:
		if len(r.PromptTokens) == 0 {
			return badRequest("empty prompt: give some text or token ids")
		}
		return checkIDs(r.PromptTokens)
	case r.Prompt == "":
		return badRequest("empty prompt: give some text to complete")
	}
	return nil
}

// checkIDs refuses token ids no vocabulary holds.
func checkIDs(ids []int) error {
	for i, t := range ids {
		if t < 0 || t > math.MaxInt32 {
			return badRequest("prompt[%d]: token id %d is out of range", i, t)
		}
	}
	return nil
}

// ParseChatRequest parses the body of a chat completion request over the
// server's defaults. Errors are 400 APIErrors.
func ParseChatRequest(body []byte, def Sampling, comp kvtrim.Compression) (*Request, error) {
	var b chatBody
	if err := decodeBody(body, &b); err != nil {
		return nil, err
	}
	chat, err := b.chat()
	if err != nil {
		return nil, err
	}
	r, err := b.samplingFields.request(def, comp)
	if err != nil {
		return nil, err
	}
	if r.NProbs, err = b.chatProbs(); err != nil {
		return nil, err
	}
	schema, err := b.chatSchema(b.Grammar)
	if err != nil {
		return nil, err
	}
	if r.ToolUse, err = b.toolUse(b.Grammar); err != nil {
		return nil, err
	}
	if !ReasoningFormatKnown(b.ReasoningFormat) {
		return nil, badRequest("Unknown reasoning format: %s", b.ReasoningFormat)
	}
	r.ReasoningFormat = b.ReasoningFormat
	if err := r.constrain(schema); err != nil {
		return nil, err
	}
	r.Chat = chat
	return r, nil
}

// constrain sets the grammar of a request's JSON Schema, if it has one.
func (r *Request) constrain(schema json.RawMessage) error {
	if schema == nil {
		return nil
	}
	g, err := schemaGrammar(schema)
	if err != nil {
		return err
	}
	r.Sampling.Grammar = g
	return nil
}

// parseMessages checks chat messages: at least one, each with a role.
func parseMessages(in []chatMessage) ([]bindings.ChatMessage, error) {
	if len(in) == 0 {
		return nil, badRequest(`"messages" is missing or empty: give at least one message`)
	}
	out := make([]bindings.ChatMessage, len(in))
	for i, m := range in {
		if m.Role == nil || *m.Role == "" {
			return nil, badRequest("messages[%d]: give a role (system, user or assistant)", i)
		}
		out[i] = bindings.ChatMessage{Role: *m.Role, Content: m.Content.text}
	}
	if n := len(out); n >= 2 && out[n-1].Role == "assistant" && out[n-2].Role == "assistant" {
		return nil, badRequest("Cannot have 2 or more assistant messages at the end of the list.")
	}
	return out, nil
}

// request resolves the shared fields over the defaults and validates them.
func (f *samplingFields) request(def Sampling, comp kvtrim.Compression) (*Request, error) {
	if err := f.unbuiltFields.check(); err != nil {
		return nil, err
	}
	s := def
	switch {
	case f.NPredict != nil:
		s.NPredict = *f.NPredict
	case f.MaxTokens != nil:
		s.NPredict = *f.MaxTokens
	case f.MaxCompletionTokens != nil:
		s.NPredict = *f.MaxCompletionTokens
	}
	if f.Temperature != nil {
		s.Temp = float32(*f.Temperature)
	}
	if f.TopK != nil {
		s.TopK = *f.TopK
	}
	if f.TopP != nil {
		s.TopP = float32(*f.TopP)
	}
	if f.MinP != nil {
		s.MinP = float32(*f.MinP)
	}
	if f.RepeatLastN != nil {
		s.RepeatLastN = *f.RepeatLastN
	}
	if f.NKeep != nil {
		s.Keep = *f.NKeep
	}
	if f.Grammar != nil {
		s.Grammar = *f.Grammar
	}
	if err := f.otherSamplers(&s); err != nil {
		return nil, err
	}
	for _, p := range []struct {
		dst *float32
		v   *float64
	}{{&s.RepeatPenalty, f.RepeatPenalty}, {&s.FrequencyPenalty, f.FrequencyPenalty}, {&s.PresencePenalty, f.PresencePenalty}} {
		if p.v != nil {
			*p.dst = float32(*p.v)
		}
	}
	if f.Seed != nil {
		switch v := *f.Seed; {
		case v == -1:
			s.Seed = RandomSeed
		case v < 0 || v > math.MaxUint32:
			return nil, badRequest("seed %d: give a value in [0, %d], or -1 for a random one", v, uint32(math.MaxUint32))
		default:
			s.Seed = uint32(v)
		}
	}
	if err := s.validate(); err != nil {
		return nil, badRequest("%v", err)
	}
	if f.Kvtrim != nil {
		var err error
		if comp, err = comp.Patch(*f.Kvtrim); err != nil {
			return nil, badRequest(`"kvtrim": %v`, err)
		}
	}
	r := &Request{
		Sampling: s, Stop: f.Stop, Stream: f.Stream, IgnoreEOS: f.IgnoreEOS,
		ReturnTokens: f.ReturnTokens, Compression: comp, Slot: -1, LogitBiasJSON: f.LogitBias,
		TimingsPerToken: f.TimingsPerToken, ReturnProgress: f.ReturnProgress,
		PostSamplingProbs: f.PostSamplingProbs, Verbose: f.Verbose, ResponseFields: f.ResponseFields,
	}

	r.Choices = 1
	nName := "n"
	if f.NCmpl != nil {
		f.N, nName = f.NCmpl, "n_cmpl"
	}
	if f.N != nil {
		switch n := *f.N; {
		case n < 1 || n > maxChoices:
			return nil, badRequest("%s %d: give between 1 and %d choices", nName, n, maxChoices)
		default:
			r.Choices = n
		}
	}
	if f.NDiscard != nil {
		if *f.NDiscard < 0 {
			return nil, badRequest("n_discard %d: give the cells a context shift drops, or 0 for half", *f.NDiscard)
		}
		r.Discard = *f.NDiscard
	}
	if f.IDSlot != nil {
		if *f.IDSlot < -1 {
			return nil, badRequest("id_slot %d: give a slot's id, or -1 for any", *f.IDSlot)
		}
		r.Slot = *f.IDSlot
	}
	if f.StreamOptions != nil {
		r.IncludeUsage = f.StreamOptions.IncludeUsage
	}
	return r, nil
}

// otherSamplers lays the request's settings of llama-server's other
// samplers, and their order, over s.
func (f *samplingFields) otherSamplers(s *Sampling) error {
	for _, p := range []struct {
		dst *float32
		v   *float32
	}{
		{&s.TopNSigma, f.TopNSigma}, {&s.TypicalP, f.TypicalP}, {&s.XTCProbability, f.XTCProbability}, {&s.XTCThreshold, f.XTCThreshold},
		{&s.DynatempRange, f.DynatempRange}, {&s.DynatempExponent, f.DynatempExponent}, {&s.DRYMultiplier, f.DRYMultiplier},
		{&s.MirostatTau, f.MirostatTau}, {&s.MirostatEta, f.MirostatEta},
	} {
		if p.v != nil {
			*p.dst = *p.v
		}
	}
	if f.DRYBase != nil && *f.DRYBase >= 1 { // as llama-server: a base below 1 keeps the default
		s.DRYBase = *f.DRYBase
	}
	for _, p := range []struct {
		dst *int
		v   *int
	}{{&s.DRYAllowedLength, f.DRYAllowedLength}, {&s.DRYPenaltyLastN, f.DRYPenaltyLastN}, {&s.Mirostat, f.Mirostat}, {&s.MinKeep, f.MinKeep}} {
		if p.v != nil {
			*p.dst = *p.v
		}
	}
	if f.DRYBreakers != nil {
		if len(f.DRYBreakers) == 0 {
			return badRequest("dry_sequence_breakers must be a non-empty array of strings")
		}
		s.DRYBreakers = f.DRYBreakers
	}
	if isSet(f.Samplers) {
		order, err := parseSamplers(f.Samplers)
		if err != nil {
			return err
		}
		s.Order = order
	}
	return nil
}

// samplerNames are llama-server's names of the samplers, and their
// one-letter forms.
var samplerNames = map[string]bindings.SamplerKind{
	"penalties": bindings.SamplerPenalties, "e": bindings.SamplerPenalties,
	"dry": bindings.SamplerDRY, "d": bindings.SamplerDRY,
	"top_n_sigma": bindings.SamplerTopNSigma, "top-n-sigma": bindings.SamplerTopNSigma, "topnsigma": bindings.SamplerTopNSigma, "s": bindings.SamplerTopNSigma,
	"top_k": bindings.SamplerTopK, "top-k": bindings.SamplerTopK, "topk": bindings.SamplerTopK, "k": bindings.SamplerTopK,
	"typ_p": bindings.SamplerTypicalP, "typ-p": bindings.SamplerTypicalP, "typp": bindings.SamplerTypicalP, "typ": bindings.SamplerTypicalP, "y": bindings.SamplerTypicalP,
	"top_p": bindings.SamplerTopP, "top-p": bindings.SamplerTopP, "topp": bindings.SamplerTopP, "nucleus": bindings.SamplerTopP, "p": bindings.SamplerTopP,
	"min_p": bindings.SamplerMinP, "min-p": bindings.SamplerMinP, "minp": bindings.SamplerMinP, "m": bindings.SamplerMinP,
	"xtc": bindings.SamplerXTC, "x": bindings.SamplerXTC,
	"temperature": bindings.SamplerTemperature, "temp": bindings.SamplerTemperature, "t": bindings.SamplerTemperature,
}

// parseSamplers reads llama-server's "samplers": a list of names, or a
// string of their letters ("edskypmxt"). A name kvtrim does not build
// (infill, adaptive_p) or does not know is refused, not skipped.
func parseSamplers(raw json.RawMessage) ([]bindings.SamplerKind, error) {
	var names []string
	var letters string
	switch {
	case json.Unmarshal(raw, &names) == nil:
	case json.Unmarshal(raw, &letters) == nil:
		names = SamplerLetters(letters)
	default:
		return nil, badRequest(`"samplers": give a list of sampler names, or a string of their letters`)
	}
	order, err := SamplerOrder(names)
	if err != nil {
		return nil, badRequest(`"samplers": %v`, err)
	}
	return order, nil
}

// SamplerLetters splits llama-server's one-letter sampler sequence
// ("edskypmxt", --sampling-seq) into names SamplerOrder takes.
func SamplerLetters(seq string) []string {
	var names []string
	for _, c := range seq {
		names = append(names, string(c))
	}
	return names
}

// SamplerOrder is the samplers named, in order, by llama-server's names,
// their aliases or their letters. A name kvtrim does not build (infill,
// adaptive_p) or does not know is an error, not skipped.
func SamplerOrder(names []string) ([]bindings.SamplerKind, error) {
	order := []bindings.SamplerKind{}
	for _, n := range names {
		k, ok := samplerNames[strings.ToLower(strings.TrimSpace(n))]
		if !ok {
			return nil, fmt.Errorf("%q is not a sampler kvtrim serve builds (penalties, dry, top_n_sigma, top_k, typ_p, top_p, min_p, xtc, temperature)", n)
		}
		order = append(order, k)
	}
	return order, nil
}

// samplerOptions are llama.cpp's sampler settings for s: greedy at a
// temperature <= 0.
func (s Sampling) samplerOptions() bindings.SamplerOptions {
	return bindings.SamplerOptions{
		Temp: s.Temp, TopK: int32(max(0, s.TopK)), TopP: s.TopP, MinP: s.MinP, Seed: s.Seed,
		PenaltyLastN: int32(s.RepeatLastN), RepeatPenalty: s.RepeatPenalty, FrequencyPenalty: s.FrequencyPenalty, PresencePenalty: s.PresencePenalty,
		Grammar: s.Grammar, GrammarTriggers: s.GrammarTriggers, TopNSigma: s.TopNSigma, TypicalP: s.TypicalP, XTCProbability: s.XTCProbability, XTCThreshold: s.XTCThreshold,
		DynatempRange: s.DynatempRange, DynatempExponent: s.DynatempExponent, DRYMultiplier: s.DRYMultiplier, DRYBase: s.DRYBase,
		DRYAllowedLength: int32(s.DRYAllowedLength), DRYPenaltyLastN: int32(s.DRYPenaltyLastN), DRYBreakers: s.DRYBreakers,
		Mirostat: s.Mirostat, MirostatTau: s.MirostatTau, MirostatEta: s.MirostatEta, MinKeep: s.MinKeep, Order: s.Order,
	}
}
