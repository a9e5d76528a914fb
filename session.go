package kvtrim

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/hooks"
)

// SessionOptions configure a Session's context.
type SessionOptions struct {
	NCtx      int    // cache cells (0: the model's n_ctx_train)
	NBatch    int    // logical batch (0: llama.cpp's 2048)
	NUbatch   int    // physical batch (0: llama.cpp's 512)
	Threads   int    // 0: one per CPU
	FlashAttn string // "on", "off" or "auto" ("": auto, llama.cpp's default)
	// CacheType is the K and V cache element type: "f16" (or "", llama.cpp's
	// default) or "f32".
	CacheType string
	// Compression compresses the prompt (zero value: keep the full cache).
	Compression Compression
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

// Session is one sequence in its own llama.cpp context: prefill a prompt
// (compressing it if asked), then generate. It is not safe for concurrent
// use.
//
// A compressing session prefills into a second, temporary context that
// carries the eval callback, sized to the prompt; it scores, evicts, and
// then moves the kept cells into the session's own context (which has no
// callback, so decoding pays nothing for observation) with a sequence state
// save and load, which also packs them from cell 0. That context only needs
// room for the kept cells and the generation: -c can be smaller than the
// prompt.
type Session struct {
	model *Model
	ctx   *bindings.Context
	copt  bindings.ContextOptions
	batch *bindings.Batch
	opt   SessionOptions
	seq   bindings.SeqID
	// nextPos is the position of the next token; used is the number of
	// cells the sequence holds.
	nextPos int32
	used    int
	stats   Stats
	// evict exists for a decode-time policy; release unregisters its
	// observer.
	evict   *evicting
	release func()
	// be is where the sequence lives and how it decodes: a context of
	// its own, or a Group's shared one (ctx is then the group's, seq the
	// member's sequence, and logits a copy of the last decoded token's
	// logits, which the member samples from).
	be     backend
	logits []float32
	// haveLogits says the last decode left the logits of the sequence's
	// last token, which Generate samples from: not after Reset, Restore
	// or Truncate, which decode nothing.
	haveLogits bool
	// progress, when set, replaces opt.Progress (SetProgress).
	progress func(done, total int)
	// attached: ctx is another binding's (Attach), observed through hook
	// when the host installed it; compression happens in it, in place.
	attached bool
	hook     *Hook
	// hostFilled: the host decoded the prompt into the attached context
	// itself (AttachOptions.Prompt), and CompressPrompt has yet to run.
	hostFilled bool
	hostPrompt []Token
}

// Stats are a session's counts and timings; JSON names are kvtrim's
// --stats-json fields.
type Stats struct {
	Policy       string `json:"policy"`
	PromptTokens int    `json:"prompt_tokens"`
	NCtx         int    `json:"n_ctx"`
	NBatch       int    `json:"n_batch"`
	NUbatch      int    `json:"n_ubatch"`
	Threads      int    `json:"threads"`
	// Attention is where a compressing session read attention from:
	// "softmax" (kq_soft_max, flash attention off) or "qk" (queries and
	// keys, flash attention on).
	Attention string `json:"attention,omitempty"`
	// Compression: the budget asked for, the cells kept and evicted, n_kv
	// (the cells attention scans) and the K+V bytes the sequence holds,
	// before and after.
	Budget        int   `json:"budget,omitempty"`
	KeptCells     int   `json:"kept_cells"`
	EvictedCells  int   `json:"evicted_cells"`
	NKVBefore     int   `json:"n_kv_before"`
	NKVAfter      int   `json:"n_kv_after"`
	KVBytesBefore int64 `json:"kv_bytes_before"`
	KVBytesAfter  int64 `json:"kv_bytes_after"`
	// KVBytesPeak is the most K+V bytes the sequence's cells took at once
	// on the way, in every context it used (a compressed prompt is
	// prefilled in a context of its own first: whole, or a chunk at a
	// time); NCtxPeak the most cells those contexts had at once.
	KVBytesPeak int64 `json:"kv_bytes_peak"`
	NCtxPeak    int   `json:"n_ctx_peak"`
	// Chunks is how many times a chunked prefill evicted before the
	// prompt's last chunk (Compression.Chunk).
	Chunks int    `json:"chunks,omitempty"`
	Note   string `json:"note,omitempty"`

	PrefillMs   float64 `json:"prefill_ms"`
	PrefillTokS float64 `json:"prefill_tok_s"`
	// LookaheadTokens is how many tokens SnapKV generated on the full cache
	// after the prompt for their attention (Compression.Lookahead).
	LookaheadTokens int `json:"lookahead_tokens,omitempty"`
	// ObserveMs is the time spent decoding the lookahead tokens and turning
	// the observed tensors into window attention (reading the prompt's
	// inside the callback is part of PrefillMs);
	// ScoreMs the policy; EvictMs the seq_rm calls; CompactMs saving the
	// state, loading it into the decoding context and decoding the last
	// prompt token there again for its logits.
	ObserveMs float64 `json:"observe_ms"`
	ScoreMs   float64 `json:"score_ms"`
	EvictMs   float64 `json:"evict_ms"`
	CompactMs float64 `json:"compact_ms"`

	DecodeTokens int `json:"decode_tokens"`
	// DecodeMs is the time spent in llama_decode for generated tokens, as
	// measured in Go around each call (the purego crossing included).
	DecodeMs   float64 `json:"decode_ms"`
	DecodeTokS float64 `json:"decode_tok_s"`
	// DecodeTokSFirst and DecodeTokSLast are the decode speed over the
	// first and the last tenth of the generated tokens (at most 256 each):
	// equal when eviction keeps the cache, and the speed, constant.
	DecodeTokSFirst float64 `json:"decode_tok_s_first"`
	DecodeTokSLast  float64 `json:"decode_tok_s_last"`
	SampleMs        float64 `json:"sample_ms"`
	// GenerateMs is the whole generation loop: sampling, decoding, output.
	GenerateMs float64 `json:"generate_ms"`
	// LlamaPromptMs and LlamaEvalMs are llama.cpp's own timers of the
	// session's context.
	LlamaPromptMs float64 `json:"llama_prompt_ms"`
	LlamaEvalMs   float64 `json:"llama_eval_ms"`
	StopReason    string  `json:"stop_reason"`
	// ContextShifts is how many times generation shifted the context
	// (GenerateOptions.ContextShift).
	ContextShifts int `json:"context_shifts,omitempty"`
}

// NewSession makes a context for one sequence.
func (m *Model) NewSession(opt SessionOptions) (*Session, error) {
	copt, err := contextOptions(opt)
	if err != nil {
		return nil, err
	}
	if err := opt.Compression.Check(); err != nil {
		return nil, err
	}
	if err := checkEvictable(m, opt.Compression); err != nil {
		return nil, err
	}
	evict, release := newEvicting(m, opt.Compression, &copt)
	ctx, err := m.NewContext(copt)
	if err != nil {
		release()
		return nil, err
	}
	if err := checkShifting(m, opt.Compression, ctx.Memory(), ctx.NCtx(), "a context of %d cells (-c)"); err != nil {
		ctx.Close()
		release()
		return nil, err
	}
	s := &Session{model: m, ctx: ctx, copt: copt, opt: opt, evict: evict, release: release}
	s.be = ownBackend{s}
	s.batch = m.lib.NewBatch(ctx.NBatch(), 1)
	s.stats = s.freshStats()
	return s, nil
}

// contextOptions turns a session's options into llama.cpp's, filling
// kvtrim's defaults.
func contextOptions(opt SessionOptions) (bindings.ContextOptions, error) {
	if opt.Threads <= 0 {
		// llama.cpp's own default (4) oversubscribes small machines badly.
		opt.Threads = runtime.NumCPU()
	}
	fa, err := ParseFlashAttn(opt.FlashAttn)
	if err != nil {
		return bindings.ContextOptions{}, err
	}
	copt := bindings.ContextOptions{
		NCtx: uint32(opt.NCtx), NBatch: uint32(opt.NBatch), NUbatch: uint32(opt.NUbatch),
		Threads: int32(opt.Threads), FlashAttn: fa,
	}
	switch opt.CacheType {
	case "", "f16":
	case "f32":
		copt.CacheTypeK, copt.CacheTypeV = bindings.CacheF32, bindings.CacheF32
	default:
		return copt, fmt.Errorf("cache type %q: use f16 or f32", opt.CacheType)
	}
	return copt, nil
}

// checkShifting refuses a shifting decode-time policy (StreamingLLM, as
// the policy or the decode policy) in a memory that cannot shift
// positions, or one that holds more cells than it has; where describes
// those cells, with a %d for their number.
func checkShifting(m *Model, c Compression, mem *bindings.Memory, cells int, where string) error {
	p, _, _ := c.decodeEntry()
	switch {
	case !c.Shifts():
		return nil
	case !mem.CanShift():
		return fmt.Errorf("model %s (architecture %s): its cache cannot shift positions, which a shifting policy needs; use --policy none", m.Path, m.Arch())
	case c.DecodeCells() > cells:
		return fmt.Errorf("%w: the %d cells %s keeps (sinks %d + recent %d) do not fit in "+where+"; raise -c or shrink the window", ErrPromptTooLong, c.DecodeCells(), p.Name, c.Sinks, c.Recent, cells)
	}
	return nil
}

// checkEvictable refuses compression c for a model whose cache cannot drop
// positions.
func checkEvictable(m *Model, c Compression) error {
	if !c.Evicts() {
		return nil
	}
	return hooks.CheckEvictable(m.Model)
}

// freshStats is the stats of a session that has done nothing yet: only
// its configuration.
func (s *Session) freshStats() Stats {
	threads, _ := s.ctx.Threads()
	st := Stats{Policy: PolicyNone, NCtx: s.NCtx(), NBatch: s.ctx.NBatch(), NUbatch: s.ctx.NUbatch(), Threads: threads}
	if s.opt.Compression.Evicts() {
		st.Policy = s.opt.Compression.Policy
	}
	if s.evict != nil && s.evict.obs != nil {
		st.Attention = s.evict.obs.Source().String()
	}
	return st
}

// Close frees the session's context; a group member's sequence is emptied
// and freed for a new member instead.
func (s *Session) Close() {
	s.batch.Close()
	s.be.close()
}

// Context is the session's llama.cpp context (a group member's is shared
// with the other members). A session of its own makes its context again
// when it prefills a compressed prompt (the prompt is built in another
// meanwhile): ask for it after Prefill, not before.
func (s *Session) Context() *bindings.Context { return s.ctx }

// NCtx is the number of cells the session's sequence can hold: its
// context's, or a group member's share.
func (s *Session) NCtx() int { return s.be.cells() }

// withCtx runs f, which uses the session's context other than to decode:
// under the group's lock for a group member.
func (s *Session) withCtx(f func()) { s.be.locked(f) }

// seqIn is the sequence the session's tokens take in c: its own in its
// context, 0 in a temporary one.
func (s *Session) seqIn(c *bindings.Context) bindings.SeqID {
	if c == s.ctx {
		return s.seq
	}
	return 0
}

// Stats returns the counts and timings so far. llama.cpp's own timers
// are left out for a group member, whose context's timers count every
// member's work.
func (s *Session) Stats() Stats {
	st := s.stats
	if !s.be.shared() {
		perf := s.ctx.Perf()
		st.LlamaPromptMs, st.LlamaEvalMs = perf.PEvalMs, perf.EvalMs
	}
	return st
}

// Tokenize turns a prompt into tokens, adding BOS as the model wants.
func (s *Session) Tokenize(text string) ([]Token, error) {
	return s.model.Vocab().Tokenize(text, true, true)
}

// ErrPromptTooLong means a prompt does not fit in the cache.
var ErrPromptTooLong = errors.New("prompt too long")

// kvBytesPerCell is the size of one cell's keys and values over all layers
// (F16 cache), or 0 for a model without attention heads (a recurrent one).
func (s *Session) kvBytesPerCell() int64 {
	m := s.model
	if m.NHead() == 0 {
		return 0
	}
	return int64(m.NLayer()) * 2 * int64(m.NEmbd()/m.NHead()*m.NHeadKV()) * 2
}

// recordHeld sets the stats of what the sequence's cache holds now: its
// cells, and their K+V bytes against those of the whole tokens they stand
// for (the prompt's, or the sequence's) held uncompressed.
func (s *Session) recordHeld(whole int) {
	st := &s.stats
	st.KeptCells = s.used
	st.KVBytesBefore = int64(whole) * s.kvBytesPerCell()
	st.KVBytesAfter = int64(s.used) * s.kvBytesPerCell()
	st.KVBytesPeak = max(st.KVBytesPeak, st.KVBytesAfter)
	st.NCtxPeak = max(st.NCtxPeak, s.NCtx())
}

// Prefill decodes prompt tokens after what the cache holds, in batches of
// n_batch tokens, asking for the logits of the last one. With a compression
// policy the prompt is compressed to the budget on the way (see Session).
func (s *Session) Prefill(ctx context.Context, tokens []Token) error {
	if len(tokens) == 0 {
		return errors.New("empty prompt: give some text with -p or -f")
	}
	// llama.cpp's CPU threads (OpenMP teams, ggml's threadpool) belong to
	// the thread that calls llama_decode: keep it the same OS thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	comp := s.opt.Compression.withDefaults()
	n := len(tokens)
	if p, asPolicy, ok := comp.decodeEntry(); ok && asPolicy {
		o := comp.decodeOptions(comp.BudgetFor(n), true)
		if p.Cells != nil {
			s.stats.Budget = p.Cells(o)
		}
		return s.prefillEvicting(ctx, tokens, o)
	}
	if comp.Evicts() {
		if s.nextPos != 0 {
			return errors.New("compressed prefill: the session already holds a prompt")
		}
		s.stats.Budget = comp.BudgetFor(n)
		if comp.PrefillsAside(n) {
			return s.prefillCompressed(ctx, tokens, comp, s.stats.Budget)
		}
		s.stats.Note = fmt.Sprintf("budget %d >= prompt %d tokens: nothing evicted", s.stats.Budget, n)
		if comp.tooShort(n) {
			s.stats.Note = fmt.Sprintf("budget %d (ratio %g of %d prompt tokens) is not larger than the window %d: the prompt is too short to compress; nothing evicted", s.stats.Budget, comp.Ratio, n, comp.WindowFor(s.stats.Budget))
		}
		if s.evict != nil && !s.evict.policy.Shifts {
			// The prompt is kept whole: the decode policy starts from all of
			// it, scored by its own attention, as when it is the policy (its
			// settings are still the decode policy's: never a split of
			// Ratio).
			if err := s.prefillEvicting(ctx, tokens, comp.decodeOptions(s.stats.Budget, false)); err != nil {
				return err
			}
			if st := &s.stats; st.EvictedCells > 0 {
				st.Note += fmt.Sprintf("; then %s kept %d of the %d prompt tokens", s.evict.policy.Name, st.KeptCells, n)
			}
			return nil
		}
	}
	if need := s.used + n; need > s.NCtx() {
		return fmt.Errorf("%w: %d tokens do not fit in a context of %d cells (-c); raise -c, shorten the prompt or compress it (--policy)", ErrPromptTooLong, need, s.NCtx())
	}
	if err := s.decode(ctx, s.ctx, nil, tokens, n); err != nil {
		return err
	}
	s.recordHeld(s.used)
	s.stats.EvictedCells = 0
	s.stats.NKVBefore, s.stats.NKVAfter = hooks.PadNKV(s.used), hooks.PadNKV(s.used)
	if s.evict != nil {
		// A shifting decode policy after a prompt kept whole.
		return s.startEvicting(nil, positions(0, s.used), nil, comp.decodeOptions(comp.BudgetFor(n), false))
	}
	return nil
}

// decode decodes tokens at the next positions into ctx in n_batch chunks,
// asking for the last one's logits; total is the whole prompt's length,
// for progress. Into the session's own sequence it goes through the
// backend; with an observer o (a temporary observing context, or an H2O
// session's own) the decodes run here and o records the cells each wrote.
func (s *Session) decode(ctx context.Context, into *bindings.Context, o *observing, tokens []Token, total int) error {
	start := time.Now()
	s.haveLogits = false // until the last chunk is in
	// Into the session's own sequence the decodes go through the backend
	// (a group member's through its group's rounds, observed or not).
	viaBackend := into == s.ctx && (o == nil || o.group != nil)
	// The batch was sized for the session's context; an observing context
	// can take larger ones.
	nb := min(into.NBatch(), s.batch.Cap())
	if viaBackend {
		nb = s.be.chunk()
	}
	seqs := []bindings.SeqID{s.seqIn(into)}
	positions := make([]int32, 0, nb)
	for i := 0; i < len(tokens); i += nb {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("prefill: %w", err)
		}
		chunk := tokens[i:min(i+nb, len(tokens))]
		last := i+len(chunk) == len(tokens)
		if viaBackend {
			var err error
			if o != nil {
				err = o.observedDecode(s, chunk, s.nextPos, last)
			} else {
				err = s.be.start(chunk, s.nextPos, last).wait()
			}
			if err != nil {
				return fmt.Errorf("prefill tokens %d-%d: %w", s.nextPos, int(s.nextPos)+len(chunk), err)
			}
			s.advance(len(chunk), total)
			continue
		}
		s.batch.Clear()
		positions = positions[:0]
		for j, t := range chunk {
			pos := s.nextPos + int32(j)
			if !s.batch.Add(t, pos, seqs, last && j == len(chunk)-1) {
				return fmt.Errorf("prefill: batch of %d tokens is full", s.batch.Cap())
			}
			positions = append(positions, pos)
		}
		if err := into.Decode(s.batch); err != nil {
			return fmt.Errorf("prefill tokens %d-%d: %w", s.nextPos, int(s.nextPos)+len(chunk), err)
		}
		if o != nil && !o.blind {
			if err := o.obs.Record(positions); err != nil {
				return err
			}
		}
		s.advance(len(chunk), total)
	}
	s.haveLogits = into == s.ctx // the last chunk asked for its last token's
	s.stats.PromptTokens += len(tokens)
	s.stats.PrefillMs += msSince(start)
	if s.stats.PrefillMs > 0 {
		s.stats.PrefillTokS = float64(s.stats.PromptTokens) / (s.stats.PrefillMs / 1000)
	}
	return nil
}

// advance moves the session past n decoded prompt tokens and reports
// progress.
func (s *Session) advance(n, total int) {
	s.nextPos += int32(n)
	s.used += n
	switch {
	case s.progress != nil:
		s.progress(int(s.nextPos), total)
	case s.opt.Progress != nil:
		s.opt.Progress(int(s.nextPos), total)
	}
}

// SetProgress replaces the session's progress callback (SessionOptions'
// Progress) until it is set again: f is called after each prefill batch
// with the position reached and the tokens of the call. nil restores the
// options' one.
func (s *Session) SetProgress(f func(done, total int)) { s.progress = f }

// GenerateOptions bound a generation.
type GenerateOptions struct {
	// MaxTokens is the most tokens to generate; < 0 means until the
	// cache is full or an end-of-generation token.
	MaxTokens int
	// IgnoreEOS keeps generating past end-of-generation tokens.
	IgnoreEOS bool
	// ContextShift, if set, shifts the context when generation fills the
	// cells, as llama-server's --context-shift, instead of stopping.
	ContextShift *ContextShift
	// Sampled, if set, is called for each generated token, before emit,
	// with the logits it was sampled from (for its probabilities); the
	// slice is only valid during the call.
	Sampled func(t Token, logits []float32)
}

// Generate samples tokens one at a time after the prefilled prompt, passing
// each token's text to emit. It stops at MaxTokens, at an end-of-generation
// token, when the cache is full, when ctx is cancelled, or when emit fails.
func (s *Session) Generate(ctx context.Context, sampler *bindings.Sampler, opt GenerateOptions, emit func(t Token, piece string) error) error {
	switch {
	case s.used == 0:
		return errors.New("generate: prefill a prompt first")
	case !s.haveLogits:
		return errors.New("generate: the cache was restored or truncated, so no logits follow it; append at least one token first")
	}
	if s.be.ownThread() { // see Prefill and memberBackend.ownThread
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	vocab := s.model.Vocab()
	start := time.Now()
	var stepMs []float64 // each decode's time, for the first/last speeds
	defer func() {
		s.stats.GenerateMs += msSince(start)
		if s.stats.DecodeMs > 0 {
			s.stats.DecodeTokS = float64(s.stats.DecodeTokens) / (s.stats.DecodeMs / 1000)
		}
		s.stats.DecodeTokSFirst, s.stats.DecodeTokSLast = edgeSpeeds(stepMs)
		s.be.idle()
	}()
	for n := 0; opt.MaxTokens < 0 || n < opt.MaxTokens; n++ {
		if err := ctx.Err(); err != nil {
			s.stats.StopReason = "cancelled"
			return err
		}
		t0 := time.Now()
		tok, err := s.sample(sampler)
		if err != nil {
			return err
		}
		s.stats.SampleMs += msSince(t0)
		if !opt.IgnoreEOS && vocab.IsEOG(tok) {
			s.stats.StopReason = "eog"
			return nil
		}
		if opt.Sampled != nil {
			opt.Sampled(tok, s.lastLogits())
		}
		// The token is decoded unless it is the last one or the cache is
		// full. A group member's decode is queued before emit and waited
		// for after it, so that emit overlaps the group's round and the
		// member is not what the round waits for.
		last, full := n == opt.MaxTokens-1, false
		if !last {
			if err := s.makeRoom(1); err != nil {
				return err
			}
		}
		if !last && opt.ContextShift != nil {
			if _, err := s.shiftContext(*opt.ContextShift); err != nil {
				return err
			}
		}
		if !last {
			full = s.used >= s.NCtx()
		}
		var step *tokenStep
		if !last && !full {
			step = s.startStep(tok)
		} else {
			// Nothing follows this token: a group's next round need not
			// wait for the member while emit writes it out.
			s.be.idle()
		}
		emitErr := emit(tok, vocab.Piece(tok, false))
		if step != nil {
			ms, err := s.finishStep(step)
			stepMs = append(stepMs, ms)
			if err != nil {
				return err
			}
		}
		switch {
		case emitErr != nil:
			s.stats.StopReason = "output"
			return emitErr
		case last:
			s.stats.StopReason = "max_tokens"
			return nil
		case full:
			s.stats.StopReason = "context_full"
			return nil
		}
	}
	s.stats.StopReason = "max_tokens"
	return nil
}

// sample picks the next token from the last decode's logits: the
// context's, or a group member's copy.
func (s *Session) sample(sampler *bindings.Sampler) (Token, error) { return s.be.sample(sampler) }

// lastLogits is the logits of the last decoded token: a group member's
// copy, or the context's.
func (s *Session) lastLogits() []float32 { return s.be.logits() }

// tokenStep is a generated token's decode, started.
type tokenStep struct {
	start   time.Time
	pending pendingDecode
}

// startStep starts decoding tok at the next position: a group member's
// decode is queued for the group's next round and runs while the member
// emits; a session of its own decodes it in finishStep.
func (s *Session) startStep(tok Token) *tokenStep {
	return &tokenStep{start: time.Now(), pending: s.be.start([]Token{tok}, s.nextPos, true)}
}

// finishStep waits for st's decode (a decode-time policy observing it),
// then moves the session past the token. It returns the step's time in
// milliseconds.
func (s *Session) finishStep(st *tokenStep) (float64, error) {
	obs := s.evict != nil && s.evict.obs != nil
	if obs {
		s.evict.obs.Arm(1)
	}
	if s.be.ownThread() {
		// A session of its own decodes now: what ran since startStep was
		// the caller's emit (writing the token out), not decoding.
		st.start = time.Now()
	}
	err := st.pending.wait()
	s.haveLogits = err == nil
	if obs {
		s.evict.obs.Disarm()
	}
	ms := msSince(st.start)
	s.stats.DecodeMs += ms
	if err != nil {
		return ms, fmt.Errorf("decode token at position %d: %w", s.nextPos, err)
	}
	s.stats.DecodeTokens++
	s.nextPos++
	s.used++
	if s.evict != nil {
		if err := s.step(s.nextPos - 1); err != nil {
			return ms, err
		}
	}
	return ms, nil
}

// decodeToken decodes one token at pos in the session's context, asking for
// its logits.
func (s *Session) decodeToken(t Token, pos int32) error {
	err := s.be.start([]Token{t}, pos, true).wait()
	s.haveLogits = err == nil
	return err
}

// edgeSpeeds is the tokens/s of the first and the last tenth of steps (at
// least 1 and at most 256 steps each), or zeros when there are none.
func edgeSpeeds(stepMs []float64) (first, last float64) {
	n := min(256, max(1, len(stepMs)/10))
	if len(stepMs) < n {
		return 0, 0
	}
	speed := func(ms []float64) float64 {
		total := 0.0
		for _, v := range ms {
			total += v
		}
		if total <= 0 {
			return 0
		}
		return float64(len(ms)) / (total / 1000)
	}
	return speed(stepMs[:n]), speed(stepMs[len(stepMs)-n:])
}

func msSince(t time.Time) float64 { return msBetween(t, time.Now()) }

func msBetween(a, b time.Time) float64 { return float64(b.Sub(a).Nanoseconds()) / 1e6 }
