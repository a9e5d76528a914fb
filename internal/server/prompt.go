package server

import (
	"fmt"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// render formats chat messages with the server's chat template, ending
// with the assistant's turn.
func (e *engine) render(msgs []bindings.ChatMessage) (string, error) {
	prompt, err := e.model.ApplyChatTemplate(e.template, msgs, true)
	if err != nil {
		return "", fmt.Errorf("apply the chat template: %w", err)
	}
	return prompt, nil
}

// promptTokens tokenizes a request's prompt (special tokens added and
// parsed, as llama-server does) or checks the token ids it gave.
func (e *engine) promptTokens(req *Request) ([]kvtrim.Token, error) {
	vocab := e.model.Vocab()
	if req.HasTokens {
		return checkTokens(req.PromptTokens, vocab.NTokens())
	}
	tokens, err := vocab.Tokenize(req.Prompt, true, true)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if len(tokens) == 0 || (len(tokens) == 1 && tokens[0] == vocab.BOS() && vocab.AddBOS()) {
		return nil, badRequest("empty prompt: it holds no tokens")
	}
	return tokens, nil
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
	enabled := c.Policy != "" && c.Policy != kvtrim.PolicyNone
	if enabled && e.evictable != nil {
		return badRequest("kv policy %s: %v", c.Policy, e.evictable)
	}
	if err := fitsStreaming(c, e.slotCtx); err != nil {
		return err
	}
	limit := e.slotCtx
	switch {
	case c.Policy == kvtrim.PolicyStreaming:
		return nil
	case c.PrefillsAside(n):
		limit = max(limit, e.model.NCtxTrain())
	}
	if n > limit {
		return badRequest("the prompt has %d tokens, more than the %d a slot can take (its context holds %d cells; -c is split over -np slots)", n, limit, e.slotCtx)
	}
	return nil
}

// fitsStreaming refuses a StreamingLLM window larger than a slot's
// context: checked before a request is queued (and at start-up for the
// server's default), where NewSession would refuse it only on a slot.
func fitsStreaming(c kvtrim.Compression, nCtx int) error {
	if c.Streams() && c.Sinks+c.Recent > nCtx {
		return badRequest("streaming: sinks %d + recent %d do not fit in a slot's context of %d cells (-c is split over -np slots)", c.Sinks, c.Recent, nCtx)
	}
	return nil
}
