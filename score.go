package kvtrim

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/policies"
)

// Score feeds tokens after what the session holds, chunk tokens per decode
// with the logits of every one, and returns the negative log-likelihood
// (natural log) of each token but the first given the tokens before it:
// nll[i] is for tokens[i+1]. Under StreamingLLM room is made before every
// chunk, so a text of any length streams through a fixed cache; with the
// full cache the text must fit in -c. For perplexity: exp(mean(nll)).
func (s *Session) Score(ctx context.Context, tokens []Token, chunk int) ([]float64, error) {
	if len(tokens) < 2 {
		return nil, errors.New("score: give at least two tokens")
	}
	if chunk < 1 {
		chunk = 1
	}
	if s.be.shared() {
		return nil, errors.New("score: a group member cannot score a text; use a session of its own")
	}
	comp := s.opt.Compression
	if comp.Evicts() && !comp.AnyPromptLength() {
		return nil, fmt.Errorf("score: policy %s: only none and a shifting policy (streaming) stream a text", comp.Policy)
	}
	runtime.LockOSThread() // see Prefill
	defer runtime.UnlockOSThread()
	chunk = min(chunk, s.batch.Cap(), s.ctx.NUbatch())
	var o policies.DecodeOptions
	if comp.Evicts() {
		p, _, _ := comp.decodeEntry()
		o = comp.decodeOptions(0, true)
		if p.Chunk != nil {
			chunk = max(1, min(chunk, p.Chunk(o)))
		}
		if s.evict.ev == nil {
			if err := s.startEvicting(nil, positions(0, s.used), nil, o); err != nil {
				return nil, err
			}
		}
	}
	vocab := s.model.Vocab().NTokens()
	nll := make([]float64, 0, len(tokens)-1)
	prev := make([]float32, vocab) // logits of the token before the chunk
	seqs := []bindings.SeqID{s.seq}
	for i := 0; i < len(tokens); i += chunk {
		if err := ctx.Err(); err != nil {
			return nll, err
		}
		part := tokens[i:min(i+chunk, len(tokens))]
		if err := s.makeRoom(len(part)); err != nil {
			return nll, err
		}
		if s.used+len(part) > s.NCtx() {
			return nll, fmt.Errorf("%w: token %d of the text does not fit in a context of %d cells (-c); stream it with --policy streaming", ErrPromptTooLong, i+len(part), s.NCtx())
		}
		s.batch.Clear()
		for j, t := range part {
			s.batch.Add(t, s.nextPos+int32(j), seqs, true)
		}
		if err := s.ctx.Decode(s.batch); err != nil {
			return nll, fmt.Errorf("score tokens %d-%d: %w", i, i+len(part), err)
		}
		for j, t := range part {
			if i+j > 0 {
				nll = append(nll, -logSoftmaxAt(prev, t))
			}
			copy(prev, s.ctx.Logits(j))
		}
		pos0 := int(s.nextPos)
		s.nextPos += int32(len(part))
		s.used += len(part)
		if s.evict != nil {
			for j := range part {
				if _, err := s.evict.ev.Step(pos0+j, nil); err != nil {
					return nll, err
				}
			}
		}
	}
	s.haveLogits = true // the last chunk's
	return nll, nil
}

// Reset empties the session's cache and forgets its policy's state and its
// stats, so that it can take another prompt as a new session would.
func (s *Session) Reset() {
	s.withCtx(func() { s.ctx.Memory().SeqRm(s.seq, -1, -1) })
	s.nextPos, s.used, s.haveLogits = 0, 0, false
	if s.evict != nil {
		s.evict.reset()
	}
	s.stats = s.freshStats()
}

// logSoftmaxAt is log(softmax(logits)[t]), computed in float64.
func logSoftmaxAt(logits []float32, t Token) float64 {
	return float64(logits[t]) - policies.LogSumExp(logits)
}
