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
	promptN      int
	predictedN   int
	stopType     string
	stoppingWord string
	promptMs     float64
	predictedMs  float64
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
	sess, err := sl.session(j.req.Compression)
	if err != nil {
		return nil, classify(err)
	}
	sl.dirty = true
	t0 := time.Now()
	if err := sess.Prefill(j.ctx, j.tokens); err != nil {
		return nil, classify(fmt.Errorf("prefill %d prompt tokens: %w", len(j.tokens), err))
	}
	res := &result{slot: sl.id, promptN: len(j.tokens), promptMs: msSince(t0), tokens: []kvtrim.Token{}}
	sampler := sl.model.Library().NewSampler(j.req.Sampling.samplerOptions())
	defer sampler.Close()
	m := newStopMatcher(j.req.Stop)
	sentTokens := 0 // tokens already sent with a delta
	t1 := time.Now()
	genErr := sess.Generate(j.ctx, sampler, kvtrim.GenerateOptions{MaxTokens: j.req.Sampling.NPredict, IgnoreEOS: j.req.IgnoreEOS},
		func(t kvtrim.Token, piece string) error {
			res.tokens = append(res.tokens, t)
			delta, stopped := m.add(piece)
			if j.req.Stream && delta != "" {
				if err := j.send(event{slot: sl.id, delta: delta, tokens: slices.Clone(res.tokens[sentTokens:])}); err != nil {
					return err
				}
				sentTokens = len(res.tokens)
			}
			if stopped {
				return errStopWord
			}
			return nil
		})
	res.predictedMs = msSince(t1)
	res.predictedN = len(res.tokens)
	after := sess.Stats()
	switch {
	case errors.Is(genErr, errStopWord):
		res.stopType, res.stoppingWord = stopWord, m.word
	case genErr != nil:
		return nil, classify(fmt.Errorf("generate: %w", genErr))
	case after.StopReason == "eog":
		res.stopType = stopEOS
	default:
		res.stopType = stopLimit
	}
	if rest := m.flush(); j.req.Stream && (rest != "" || sentTokens < len(res.tokens)) {
		if err := j.send(event{slot: sl.id, delta: rest, tokens: slices.Clone(res.tokens[sentTokens:])}); err != nil {
			return nil, err
		}
	}
	res.content = m.content()
	res.stats = after // the session was new or reset for this request
	return res, nil
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
