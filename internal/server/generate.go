package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kvtrim/kvtrim"
)

// Stop types, as llama-server names them.
const (
	stopEOS   = "eos"   // an end-of-generation token
	stopWord  = "word"  // a stop string
	stopLimit = "limit" // n_predict tokens, or a full context
)

// result is what one finished request produced.
type result struct {
	slot         int
	content      string
	tokens       []kvtrim.Token
	prompt       []kvtrim.Token // the request's, whole
	promptN      int            // the prompt's tokens
	cacheN       int            // of which the slot's cache held already
	predictedN   int
	stopType     string
	stoppingWord string
	truncated    bool // generation stopped at a full context
	// probs are the generated tokens' probabilities (Request.NProbs), less
	// a stop string's tokens.
	probs       []tokenProb
	promptMs    float64
	predictedMs float64
	// stats are this request's counts and timings (the session's, less
	// what earlier requests on it added).
	stats kvtrim.Stats
}

// errStopWord ends generation at a stop string.
var errStopWord = errors.New("stop string")

// serve runs j on the slot: prefill, then generate, streaming deltas when
// asked. Only the slot's goroutine calls it.
func (sl *slot) serve(j *job) (*result, error) {
	if err := j.ctx.Err(); err != nil {
		return nil, err // the client left while the request waited
	}
	t0 := time.Now()
	if j.refresh && sl.cache != nil {
		sl.swapCached(j.req.Compression, j.tokens)
	}
	var progress func(processed, cached int)
	if j.req.Stream && j.req.ReturnProgress {
		progress = func(processed, cached int) {
			ev := event{slot: sl.id, promptN: len(j.tokens), cacheN: cached, progress: &promptProgress{
				Total: len(j.tokens), Cache: cached, Processed: min(processed, len(j.tokens)), TimeMs: int64(msSince(t0)),
			}}
			if j.req.TimingsPerToken {
				// The prompt's timings so far: nothing before its first batch.
				ms := 0.0
				if processed > cached {
					ms = msSince(t0)
				}
				ev.timings = timingsOf(&result{promptN: ev.progress.Processed, cacheN: cached, promptMs: ms})
			}
			j.send(ev)
		}
	}
	sess, cached, err := sl.prefill(j.ctx, j.req.Compression, j.tokens, progress)
	if err != nil {
		return nil, classify(err)
	}
	res := &result{slot: sl.id, prompt: j.tokens, promptN: len(j.tokens), cacheN: cached, promptMs: msSince(t0), tokens: []kvtrim.Token{}}
	var shifts []struct{ keep, discard int } // the context shifts, in order
	defer func() {
		// What the cache now holds, however generation ended, less what
		// context shifts took out.
		sl.history = append(append(sl.history[:0], j.tokens...), res.tokens...)
		for _, c := range shifts {
			sl.history = append(sl.history[:c.keep], sl.history[c.keep+c.discard:]...)
		}
		sl.history = sl.history[:sess.Position()]
	}()
	so := j.req.Sampling.samplerOptions()
	so.LogitBias, so.NVocab = j.req.LogitBias, int32(sl.model.Vocab().NTokens())
	so.Vocab = sl.model.Vocab()
	if so.PenaltyLastN < 0 {
		so.PenaltyLastN = int32(sl.nCtx)
	}
	if so.DRYPenaltyLastN < 0 {
		so.DRYPenaltyLastN = int32(sl.nCtx)
	}
	sampler := sl.model.Library().NewSampler(so)
	defer sampler.Close()
	if so.PenaltyLastN > 0 {
		// As llama-server, the penalties count the prompt's tokens too.
		for _, t := range j.tokens[max(0, len(j.tokens)-int(so.PenaltyLastN)):] {
			sampler.Accept(t)
		}
	}
	m := newStopMatcher(j.req.Stop)
	sentTokens := 0 // tokens already sent with a delta
	opt := kvtrim.GenerateOptions{MaxTokens: j.req.Sampling.NPredict, IgnoreEOS: j.req.IgnoreEOS}
	// As llama-server without context shift: generation stops when the
	// prompt and the answer fill the slot's context, and the answer says
	// it was truncated. A policy that evicts while decoding never fills it.
	room := -1
	switch {
	case j.req.Compression.EvictsWhileDecoding():
	case sl.shift:
		// As llama-server with --context-shift: a full slot drops half of
		// what follows the kept prompt tokens, and generation goes on.
		keep := j.req.Sampling.Keep
		if keep < 0 {
			keep = len(j.tokens)
		}
		if sl.model.Vocab().AddBOS() {
			keep++
		}
		opt.ContextShift = &kvtrim.ContextShift{Keep: keep, Discard: j.req.Discard, Shifted: func(keep, discard int) {
			shifts = append(shifts, struct{ keep, discard int }{keep, discard})
		}}
	default:
		room = max(0, sess.NCtx()-sess.Held())
		if opt.MaxTokens < 0 || opt.MaxTokens > room {
			opt.MaxTokens = room
		} else {
			room = -1 // n_predict ends it first
		}
	}
	if n := j.req.NProbs; n > 0 {
		vocab := sl.model.Vocab()
		opt.Sampled = func(t kvtrim.Token, logits []float32) {
			if j.req.PostSamplingProbs {
				res.probs = append(res.probs, postSamplingProbsOf(vocab, t, sampler.Candidates(), n))
				return
			}
			res.probs = append(res.probs, probsOf(vocab, t, logits, n))
		}
	}
	// As llama-server counts: the prompt's time runs until the first token
	// is sampled (from the prompt's logits), the generation's from then to
	// the last one.
	var first, last time.Time
	genErr := sess.Generate(j.ctx, sampler, opt,
		func(t kvtrim.Token, piece string) error {
			last = time.Now()
			if first.IsZero() {
				first = last
			}
			res.tokens = append(res.tokens, t)
			delta, stopped := m.add(piece)
			if j.req.Stream && delta != "" {
				ev := event{slot: sl.id, promptN: res.promptN, cacheN: res.cacheN, delta: delta, tokens: slices.Clone(res.tokens[sentTokens:])}
				if j.req.TimingsPerToken {
					sofar := *res
					sofar.promptMs, sofar.predictedN = msBetween(t0, first), len(res.tokens)
					sofar.predictedMs = max(0.001, msBetween(first, last))
					ev.timings = timingsOf(&sofar)
				}
				if res.probs != nil {
					ev.probs = slices.Clone(res.probs[sentTokens:])
				}
				if err := j.send(ev); err != nil {
					return err
				}
				sentTokens = len(res.tokens)
			}
			if stopped {
				return errStopWord
			}
			return nil
		})
	if !first.IsZero() {
		res.promptMs = msBetween(t0, first)
		res.predictedMs = max(0.001, msBetween(first, last)) // llama-server's 1 us floor
	}
	res.predictedN = len(res.tokens)
	after := sess.Stats()
	res.truncated = room >= 0 && res.predictedN >= room || after.ContextShifts > 0 || after.StopReason == "context_full"
	switch {
	case errors.Is(genErr, errStopWord):
		res.stopType, res.stoppingWord = stopWord, m.word
		if res.probs != nil {
			// As llama-server: the stop string's tokens have no
			// probabilities in the answer.
			n := 0
			if toks, err := sl.model.Vocab().Tokenize(m.word, false, false); err == nil {
				n = len(toks)
			}
			res.probs = res.probs[:len(res.probs)-min(n, len(res.probs))]
		}
	case genErr != nil:
		return nil, classify(fmt.Errorf("generate: %w", genErr))
	case after.StopReason == "eog":
		res.stopType = stopEOS
	default:
		res.stopType = stopLimit
	}
	if rest := m.flush(); j.req.Stream && (rest != "" || sentTokens < len(res.tokens)) {
		ev := event{slot: sl.id, delta: rest, tokens: slices.Clone(res.tokens[sentTokens:])}
		if sentTokens < len(res.probs) {
			ev.probs = slices.Clone(res.probs[sentTokens:])
		}
		if err := j.send(ev); err != nil {
			return nil, err
		}
	}
	res.content = m.content()
	res.stats = after // the session was new, reset, or its stats zeroed for this request
	// A reused cache decoded only the prompt's new tokens; the request's
	// prompt is all of them.
	res.stats.PromptTokens = res.promptN
	return res, nil
}

// prefill puts prompt in the slot's cache and returns the session and how
// many of prompt's tokens the cache already held. When the slot's session
// has the same compression and holds a prefix of prompt, only the rest is
// decoded (Session.Truncate, Append); otherwise the session is reset, or
// made anew, and the whole prompt is prefilled (and compressed). The rule
// for a compressed cache is in doc.go.
func (sl *slot) prefill(ctx context.Context, c kvtrim.Compression, prompt []kvtrim.Token, progress func(processed, cached int)) (*kvtrim.Session, int, error) {
	// progress, when set, hears of the tokens in the cache before the
	// prompt is decoded and after each batch (return_progress).
	watch := func(sess *kvtrim.Session, cached int) func() {
		if progress == nil {
			return func() {}
		}
		progress(cached, cached)
		sess.SetProgress(func(done, _ int) { progress(done, cached) })
		return func() { sess.SetProgress(nil) }
	}
	if keep := sl.reusable(c, prompt); keep > 0 {
		if err := sl.sess.Truncate(keep); err == nil {
			sl.sess.ResetStats()
			defer watch(sl.sess, keep)()
			if err := sl.sess.Append(ctx, prompt[keep:]); err != nil {
				sl.history = sl.history[:0] // what the cache holds is unknown: start over next time
				return nil, 0, fmt.Errorf("decode %d new prompt tokens after %d cached: %w", len(prompt)-keep, keep, err)
			}
			return sl.sess, keep, nil
		}
	}
	sess, err := sl.session(c)
	if err != nil {
		return nil, 0, err
	}
	sl.dirty = true
	sl.history = sl.history[:0]
	if sess.PrefillsAside(len(prompt)) {
		// The prompt is built in a temporary context of its own (as large
		// as itself, or budget + chunk cells): one at a time, so that the
		// slots' memory plus one such context bounds the server's. A slot
		// of a group that observes its context prefills in its own stream
		// instead, beside the others (kvtrim.Group).
		select {
		case sl.observing <- struct{}{}:
			defer func() { <-sl.observing }()
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	defer watch(sess, 0)()
	if err := sess.Prefill(ctx, prompt); err != nil {
		return nil, 0, fmt.Errorf("prefill %d prompt tokens: %w", len(prompt), err)
	}
	return sess, 0, nil
}

// reusable is how many leading tokens of prompt the slot's cache can keep
// for a request with compression c (cachedPrefix).
func (sl *slot) reusable(c kvtrim.Compression, prompt []kvtrim.Token) int {
	if sl.sess == nil || !sl.dirty {
		return 0
	}
	return cachedPrefix(sl.comp, c, sl.history, prompt)
}

// classify turns a session error into the API error it is answered with:
// a prompt that does not fit is the client's (400), a cancelled context
// stays itself, anything else is a server fault.
func classify(err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, kvtrim.ErrPromptTooLong):
		return badRequest("%v", err)
	}
	return err
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Nanoseconds()) / 1e6 }

func msBetween(a, b time.Time) float64 { return float64(b.Sub(a).Nanoseconds()) / 1e6 }
