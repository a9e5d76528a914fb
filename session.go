package kvtrim

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/kvtrim/kvtrim/bindings"
)

// SessionOptions configure a Session's context.
type SessionOptions struct {
	NCtx      int    // cache cells (0: the model's n_ctx_train)
	NBatch    int    // logical batch (0: llama.cpp's 2048)
	NUbatch   int    // physical batch (0: llama.cpp's 512)
	Threads   int    // 0: one per CPU
	FlashAttn string // "on", "off" or "auto" ("": auto, llama.cpp's default)
	// Progress, if set, is called after each prefill batch.
	Progress func(done, total int)
}

// ParseFlashAttn turns "on", "off" or "auto" (or "") into llama.cpp's setting.
func ParseFlashAttn(s string) (bindings.FlashAttn, error) {
	switch s {
	case "auto", "":
		return bindings.FlashAttnAuto, nil
	case "on", "1", "true":
		return bindings.FlashAttnEnabled, nil
	case "off", "0", "false":
		return bindings.FlashAttnDisabled, nil
	}
	return 0, fmt.Errorf("flash attention %q: use on, off or auto", s)
}

// Token is a vocabulary index.
type Token = bindings.Token

// Session is one sequence in its own llama.cpp context: prefill a prompt,
// then generate. It is not safe for concurrent use.
type Session struct {
	model *Model
	ctx   *bindings.Context
	batch *bindings.Batch
	opt   SessionOptions
	seq   bindings.SeqID
	// tokens holds every token in the cache, in position order.
	tokens []Token
	stats  Stats
}

// Stats are a session's counts and timings; JSON names are kvtrim's
// --stats-json fields.
type Stats struct {
	PromptTokens int     `json:"prompt_tokens"`
	NCtx         int     `json:"n_ctx"`
	NBatch       int     `json:"n_batch"`
	NUbatch      int     `json:"n_ubatch"`
	Threads      int     `json:"threads"`
	PrefillMs    float64 `json:"prefill_ms"`
	PrefillTokS  float64 `json:"prefill_tok_s"`
	DecodeTokens int     `json:"decode_tokens"`
	// DecodeMs is the time spent in llama_decode for generated tokens, as
	// measured in Go around each call (the purego crossing included).
	DecodeMs   float64 `json:"decode_ms"`
	DecodeTokS float64 `json:"decode_tok_s"`
	SampleMs   float64 `json:"sample_ms"`
	// GenerateMs is the whole generation loop: sampling, decoding, output.
	GenerateMs float64 `json:"generate_ms"`
	// LlamaPromptMs and LlamaEvalMs are llama.cpp's own timers.
	LlamaPromptMs float64 `json:"llama_prompt_ms"`
	LlamaEvalMs   float64 `json:"llama_eval_ms"`
	StopReason    string  `json:"stop_reason"`
}

// NewSession makes a context for one sequence.
func (m *Model) NewSession(opt SessionOptions) (*Session, error) {
	if opt.Threads <= 0 {
		// llama.cpp's own default (4) oversubscribes small machines badly.
		opt.Threads = runtime.NumCPU()
	}
	fa, err := ParseFlashAttn(opt.FlashAttn)
	if err != nil {
		return nil, err
	}
	copt := bindings.ContextOptions{
		NCtx: uint32(opt.NCtx), NBatch: uint32(opt.NBatch), NUbatch: uint32(opt.NUbatch),
		Threads: int32(opt.Threads), FlashAttn: fa,
	}
	ctx, err := m.NewContext(copt)
	if err != nil {
		return nil, err
	}
	s := &Session{model: m, ctx: ctx, opt: opt}
	s.batch = m.lib.NewBatch(ctx.NBatch(), 1)
	threads, _ := ctx.Threads()
	s.stats = Stats{NCtx: ctx.NCtx(), NBatch: ctx.NBatch(), NUbatch: ctx.NUbatch(), Threads: threads}
	return s, nil
}

// Close frees the session's context.
func (s *Session) Close() {
	s.batch.Close()
	s.ctx.Close()
}

// Context is the session's llama.cpp context.
func (s *Session) Context() *bindings.Context { return s.ctx }

// Tokens is every token in the cache, in position order.
func (s *Session) Tokens() []Token { return s.tokens }

// Stats returns the counts and timings so far.
func (s *Session) Stats() Stats {
	st := s.stats
	perf := s.ctx.Perf()
	st.LlamaPromptMs, st.LlamaEvalMs = perf.PEvalMs, perf.EvalMs
	return st
}

// Tokenize turns a prompt into tokens, adding BOS as the model wants.
func (s *Session) Tokenize(text string) ([]Token, error) {
	return s.model.Vocab().Tokenize(text, true, true)
}

// ErrPromptTooLong means a prompt does not fit in the cache.
var ErrPromptTooLong = errors.New("prompt too long")

// Prefill decodes prompt tokens after what the cache holds, in batches of
// n_batch tokens, asking for the logits of the last one.
func (s *Session) Prefill(ctx context.Context, tokens []Token) error {
	if len(tokens) == 0 {
		return errors.New("empty prompt: give some text with -p or -f")
	}
	if need := len(s.tokens) + len(tokens); need > s.ctx.NCtx() {
		return fmt.Errorf("%w: %d tokens do not fit in a context of %d cells (-c); raise -c or shorten the prompt", ErrPromptTooLong, need, s.ctx.NCtx())
	}
	// llama.cpp's CPU threads (OpenMP teams, ggml's threadpool) belong to
	// the thread that calls llama_decode: keep it the same OS thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := time.Now()
	nb := s.ctx.NBatch()
	for i := 0; i < len(tokens); i += nb {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("prefill: %w", err)
		}
		chunk := tokens[i:min(i+nb, len(tokens))]
		s.batch.Clear()
		pos := bindings.Pos(len(s.tokens))
		for j, t := range chunk {
			s.batch.Add(t, pos+bindings.Pos(j), []bindings.SeqID{s.seq}, i+j == len(tokens)-1)
		}
		if err := s.ctx.Decode(s.batch); err != nil {
			return fmt.Errorf("prefill tokens %d-%d: %w", len(s.tokens), len(s.tokens)+len(chunk), err)
		}
		s.tokens = append(s.tokens, chunk...)
		if s.opt.Progress != nil {
			s.opt.Progress(i+len(chunk), len(tokens))
		}
	}
	s.stats.PromptTokens += len(tokens)
	s.stats.PrefillMs += msSince(start)
	if s.stats.PrefillMs > 0 {
		s.stats.PrefillTokS = float64(s.stats.PromptTokens) / (s.stats.PrefillMs / 1000)
	}
	return nil
}

// GenerateOptions bound a generation.
type GenerateOptions struct {
	// MaxTokens is the most tokens to generate; < 0 means until the
	// cache is full or an end-of-generation token.
	MaxTokens int
	// IgnoreEOS keeps generating past end-of-generation tokens.
	IgnoreEOS bool
}

// Generate samples tokens one at a time after the prefilled prompt, passing
// each token's text to emit. It stops at MaxTokens, at an end-of-generation
// token, when the cache is full, when ctx is cancelled, or when emit fails.
func (s *Session) Generate(ctx context.Context, sampler *bindings.Sampler, opt GenerateOptions, emit func(t Token, piece string) error) error {
	if len(s.tokens) == 0 {
		return errors.New("generate: prefill a prompt first")
	}
	runtime.LockOSThread() // see Prefill
	defer runtime.UnlockOSThread()
	vocab := s.model.Vocab()
	seqs := []bindings.SeqID{s.seq}
	start := time.Now()
	defer func() {
		s.stats.GenerateMs += msSince(start)
		if s.stats.DecodeMs > 0 {
			s.stats.DecodeTokS = float64(s.stats.DecodeTokens) / (s.stats.DecodeMs / 1000)
		}
	}()
	for n := 0; opt.MaxTokens < 0 || n < opt.MaxTokens; n++ {
		if err := ctx.Err(); err != nil {
			s.stats.StopReason = "cancelled"
			return err
		}
		t0 := time.Now()
		tok := sampler.Sample(s.ctx, -1)
		s.stats.SampleMs += msSince(t0)
		if !opt.IgnoreEOS && vocab.IsEOG(tok) {
			s.stats.StopReason = "eog"
			return nil
		}
		if err := emit(tok, vocab.Piece(tok, false)); err != nil {
			s.stats.StopReason = "output"
			return err
		}
		if n == opt.MaxTokens-1 {
			break // the last token needs no decode
		}
		if len(s.tokens) >= s.ctx.NCtx() {
			s.stats.StopReason = "context_full"
			return nil
		}
		s.batch.Clear()
		s.batch.Add(tok, bindings.Pos(len(s.tokens)), seqs, true)
		t1 := time.Now()
		err := s.ctx.Decode(s.batch)
		s.stats.DecodeMs += msSince(t1)
		if err != nil {
			return fmt.Errorf("decode token %d: %w", len(s.tokens), err)
		}
		s.stats.DecodeTokens++
		s.tokens = append(s.tokens, tok)
	}
	s.stats.StopReason = "max_tokens"
	return nil
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Nanoseconds()) / 1e6 }
