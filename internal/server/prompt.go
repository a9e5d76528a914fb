package server

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/internal/chattemplate"
)

// render formats a chat with the server's chat template (the Jinja one
// under --jinja), as llama-server's chat layer does: ending with the
// opening of the assistant's turn unless asked not to, or inside a final
// message it continues (continue_final_message, or a final assistant
// message under --prefill-assistant).
func (e *engine) render(c Chat) (string, error) {
	msgs := c.Messages
	last := len(msgs) - 1
	cont := c.ContinueFinal || (e.prefill && last >= 0 && msgs[last].Role == "assistant")
	if e.jinja == nil {
		switch {
		case len(c.Kwargs) > 0:
			return "", badRequest(`"chat_template_kwargs" need a Jinja chat template: start the server with --jinja`)
		case c.Tools != nil:
			return "", badRequest("tools param requires --jinja flag")
		case c.Extra != nil:
			return "", badRequest("tool calls in messages need a Jinja chat template: start the server with --jinja")
		}
		// llama.cpp's built-in templates render a continued message whole.
		prompt, err := e.model.ApplyChatTemplate(e.template, msgs, !c.NoGenerationPrompt && !cont)
		if err != nil {
			return "", fmt.Errorf("apply the chat template: %w", err)
		}
		return prompt, nil
	}
	in := chattemplate.Input{AddGenerationPrompt: !c.NoGenerationPrompt, Now: time.Now(), Vars: map[string]any{}}
	for k, v := range e.templateVars {
		in.Vars[k] = v
	}
	for k, raw := range c.Kwargs {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return "", badRequest(`"chat_template_kwargs" %q: %v`, k, err)
		}
		in.Vars[k] = v
	}
	if c.Tools != nil {
		var tools any
		if err := json.Unmarshal(c.Tools, &tools); err != nil {
			return "", badRequest(`"tools": %v`, err)
		}
		in.Vars["tools"] = tools
	}
	if cont {
		// The conversation before it, with the assistant's opening, then
		// the message's own text.
		msgs, in.AddGenerationPrompt = msgs[:last], true
	}
	for i, m := range msgs {
		msg := chattemplate.Message{Role: m.Role, Content: m.Content}
		if c.Extra != nil {
			msg.Extra = c.Extra[i]
		}
		in.Messages = append(in.Messages, msg)
	}
	prompt, err := e.jinja.Render(in)
	if err != nil {
		return "", badRequest("%v", err) // a template's raise_exception: the conversation is refused
	}
	if cont {
		prompt += c.Continued
	}
	return prompt, nil
}

// promptTokens tokenizes a request's prompt (special tokens added and
// parsed, as llama-server does) or checks the token ids it gave. A prompt
// far longer than its request may take is refused before it is tokenized
// whole (tokenizeWithin).
func (e *engine) promptTokens(req *Request) ([]kvtrim.Token, error) {
	vocab := e.model.Vocab()
	if len(req.PromptPieces) > 0 {
		return e.mixedTokens(req.PromptPieces)
	}
	if req.HasTokens {
		return checkTokens(req.PromptTokens, vocab.NTokens())
	}
	tokens, err := e.tokenizeWithin(req.Prompt, e.promptLimit(req.Compression))
	if err != nil {
		return nil, err
	}
	if len(tokens) == 0 || (len(tokens) == 1 && tokens[0] == vocab.BOS() && vocab.AddBOS()) {
		return nil, badRequest("empty prompt: it holds no tokens")
	}
	return tokens, nil
}

// prefixBytesPerToken is the first prefix tokenizeWithin tries, in bytes
// per token of the limit: more than any common tokenizer's mean.
const prefixBytesPerToken = 16

// tokenizeWithin tokenizes text, which may hold at most limit tokens (0:
// any number). A text longer than 16 bytes a token of the limit is first
// tokenized by prefixes, each four times the last, cut at white space:
// one that already holds more than limit tokens refuses the prompt, so a
// request many times too long costs a tokenization of a few times its
// limit, not of all of it (a 15 MB prompt would otherwise take hundreds
// of MB inside llama.cpp's tokenizer before being refused).
func (e *engine) tokenizeWithin(text string, limit int) ([]kvtrim.Token, error) {
	vocab := e.model.Vocab()
	if limit > 0 {
		for size := prefixBytesPerToken * (limit + 1); size < len(text); size *= 4 {
			cut := strings.LastIndexAny(text[:size], " \n\t")
			if cut <= 0 {
				cut = size
			}
			part, err := vocab.Tokenize(text[:cut], true, true)
			if err != nil {
				return nil, badRequest("%v", err)
			}
			if len(part) > limit {
				return nil, exceedsContext(len(part), e.slotCtx, fmt.Sprintf("request exceeds the %d tokens a slot can take: the prompt's first %d of %d bytes already hold %d (a slot's context holds %d cells; -c is split over -np slots)",
					limit, cut, len(text), len(part), e.slotCtx))
			}
		}
	}
	tokens, err := vocab.Tokenize(text, true, true)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	return slices.Clone(tokens), nil // not the text-sized buffer llama.cpp wrote into
}

// promptLimit is the most tokens a prompt compressed with c may have, as
// checkFits counts them: a slot's context, or for a compression that
// prefills aside the larger of that and the model's training context; 0
// for StreamingLLM, which takes any length.
func (e *engine) promptLimit(c kvtrim.Compression) int {
	switch {
	case c.AnyPromptLength():
		return 0
	case c.PrefillsAside(math.MaxInt32):
		return max(e.slotCtx, e.model.NCtxTrain())
	}
	return e.slotCtx
}

// mixedTokens is a prompt of token ids and strings, as llama-server
// tokenizes one: each string alone, the first with the model's BOS when it
// leads the prompt.
func (e *engine) mixedTokens(pieces []PromptPiece) ([]kvtrim.Token, error) {
	vocab := e.model.Vocab()
	var out []kvtrim.Token
	for i, p := range pieces {
		if !p.IsText {
			toks, err := checkTokens(p.Tokens, vocab.NTokens())
			if err != nil {
				return nil, err
			}
			out = append(out, toks...)
			continue
		}
		toks, err := vocab.Tokenize(p.Text, i == 0, true)
		if err != nil {
			return nil, badRequest("%v", err)
		}
		out = append(out, toks...)
	}
	if len(out) == 0 {
		return nil, badRequest("empty prompt: it holds no tokens")
	}
	return out, nil // checkFits bounds it, as any prompt
}

// checkTokens converts token ids, refusing ones outside the vocabulary.
func checkTokens(ids []int, nVocab int) ([]kvtrim.Token, error) {
	out := make([]kvtrim.Token, len(ids))
	for i, id := range ids {
		if id < 0 || id >= nVocab {
			return nil, badRequest("token %d at index %d is outside the vocabulary of %d tokens", id, i, nVocab)
		}
		out[i] = kvtrim.Token(id)
	}
	return out, nil
}

// checkFits refuses, before queueing, a prompt its slot cannot hold and a
// compression the model does not allow. A compressed prompt may be longer
// than the slot's context (it is prefilled into a temporary one), up to the
// larger of that and the model's training context; streaming takes any
// length.
func (e *engine) checkFits(c kvtrim.Compression, n int) error {
	if c.Evicts() && e.evictable != nil {
		return badRequest("kv policy %s: %v", c.Policy, e.evictable)
	}
	if err := fitsShifting(c, e.slotCtx); err != nil {
		return err
	}
	switch {
	case c.AnyPromptLength():
		return nil
	case c.PrefillsAside(n):
		if limit := max(e.slotCtx, e.model.NCtxTrain()); n > limit {
			return exceedsContext(n, e.slotCtx, fmt.Sprintf("request (%d tokens) exceeds the %d tokens a compressed prompt can have here (the larger of a slot's context, %d cells, and the model's training context)", n, limit, e.slotCtx))
		}
	case n >= e.slotCtx:
		// As llama-server: a prompt must leave a slot room for a token.
		return exceedsContext(n, e.slotCtx, fmt.Sprintf("request (%d tokens) exceeds the available context size (%d tokens), try increasing it (-c is split over -np slots) or compressing the prompt", n, e.slotCtx))
	}
	return nil
}

// exceedsContext is llama-server's error for a prompt a slot cannot hold.
func exceedsContext(n, nCtx int, msg string) *APIError {
	return &APIError{Code: http.StatusBadRequest, Type: typeExceedContext, Message: msg, NPromptTokens: n, NCtx: nCtx}
}

// fitsShifting refuses a shifting policy (StreamingLLM) that keeps more
// cells than a slot's context has: checked before a request is queued
// (and at start-up for the server's default), where NewSession would
// refuse it only on a slot.
func fitsShifting(c kvtrim.Compression, nCtx int) error {
	if c.Shifts() && c.DecodeCells() > nCtx {
		return badRequest("%s: the %d cells it keeps (sinks %d + recent %d) do not fit in a slot's context of %d cells (-c is split over -np slots)", c.PolicyName(), c.DecodeCells(), c.Sinks, c.Recent, nCtx)
	}
	return nil
}
