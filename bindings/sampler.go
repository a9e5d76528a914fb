package bindings

import (
	"cmp"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"unsafe"
)

// SamplerOptions configure a sampler chain. Temp <= 0 means greedy.
type SamplerOptions struct {
	Temp float32
	TopK int32   // 0: off
	TopP float32 // 1: off
	MinP float32 // 0: off
	Seed uint32
	// LogitBias is added to the logits before anything else (greedy
	// included): llama.cpp's logit-bias sampler, for a vocabulary of
	// NVocab tokens. A bias of -Inf bans a token.
	LogitBias []LogitBias
	NVocab    int32
	// Penalties over the last PenaltyLastN accepted tokens (llama.cpp's
	// penalties sampler, after the biases): RepeatPenalty divides (1:
	// off; 0 counts as 1), FrequencyPenalty and PresencePenalty subtract
	// (0: off). Accept the prompt's tokens first for them to count, as
	// llama-server does.
	PenaltyLastN                                     int32
	RepeatPenalty, FrequencyPenalty, PresencePenalty float32
	// Grammar, when set, is a GBNF grammar (start symbol root) for
	// Vocab's tokens that constrains every draw before the chain, as
	// llama-server's grammar field does.
	Grammar string
	Vocab   *Vocab
	// GrammarTriggers, when set, make the grammar lazy: it constrains
	// nothing until the generated text matches one of these regular
	// expressions (C++ std::regex syntax; one that does not compile aborts
	// llama.cpp, so give only patterns made here, such as TriggerWord's),
	// and then constrains the text from the match (its first group, if
	// any) on, as llama-server's tool-call grammars do.
	GrammarTriggers []string
	// The rest of llama-server's samplers, each left out at its neutral
	// setting: top-n-sigma (<= 0), locally typical (<= 0 or >= 1), XTC
	// (probability 0), dynamic temperature (range 0), DRY (multiplier 0;
	// it needs Vocab) and Mirostat (0; 1 or 2 replace the chain after the
	// biases). MinKeep is the candidates top-p, min-p, typical and XTC
	// leave at least.
	TopNSigma                       float32
	TypicalP                        float32
	XTCProbability, XTCThreshold    float32
	DynatempRange, DynatempExponent float32
	DRYMultiplier, DRYBase          float32
	DRYAllowedLength                int32
	DRYPenaltyLastN                 int32 // 0: off
	DRYBreakers                     []string
	Mirostat                        int
	MirostatTau, MirostatEta        float32
	MinKeep                         int
	// Order is the order the samplers run in; nil is DefaultOrder.
	Order []SamplerKind
}

// penalizes reports whether the options ask for any penalty.
func (o SamplerOptions) penalizes() bool {
	return o.PenaltyLastN != 0 && (o.RepeatPenalty != 0 && o.RepeatPenalty != 1 || o.FrequencyPenalty != 0 || o.PresencePenalty != 0)
}

// LogitBias is llama_logit_bias: a bias added to one token's logit.
type LogitBias struct {
	Token Token
	Bias  float32
}

// Sampler is a llama.cpp sampler chain.
type Sampler struct {
	lib *Library
	ptr uintptr
	cur []TokenData // SampleLogits' candidates, reused
	// last is the candidates the chain left at the last SampleLogits
	// (within cur), and picked the one it selected; greedy says the
	// chain ends in greedy, which sets no probabilities.
	last   []TokenData
	picked Token
	greedy bool
	// grammar constrains the candidates before the chain, outside it, so
	// that Accept (a prompt's tokens, for the penalties) does not advance
	// it; 0 without one.
	grammar uintptr
}

// ErrGrammar means a GBNF grammar did not parse.
var ErrGrammar = errors.New("failed to parse grammar")

// CheckGrammar parses a GBNF grammar (its start symbol named root) for
// this vocabulary, as a sampler would, and frees it: a caller checks a
// grammar before it queues the request that needs it. llama.cpp logs
// where the grammar is wrong.
func (v *Vocab) CheckGrammar(grammar string) error {
	g := v.lib.fn.llamaSamplerInitGrammar(v.ptr, cString(grammar), cString("root"))
	if g == 0 {
		return ErrGrammar
	}
	v.lib.fn.llamaSamplerFree(g)
	return nil
}

// NewSampler builds a chain as llama-server's: the logit biases, then
// the samplers in o.Order (DefaultOrder when nil), each left out at its
// neutral setting, then a seeded draw, or greedy when Temp <= 0; or, with
// Mirostat, the biases, the temperature and Mirostat alone. A grammar, if
// any, constrains the candidates before all of them.
func (l *Library) NewSampler(o SamplerOptions) *Sampler {
	s := &Sampler{lib: l, ptr: l.chain(o), greedy: o.Temp <= 0 && o.Mirostat == 0}
	switch {
	case o.Grammar == "" || o.Vocab == nil:
	case len(o.GrammarTriggers) > 0:
		s.grammar = l.lazyGrammar(o)
	default:
		// A grammar that does not parse gives none: check it first
		// (Vocab.CheckGrammar).
		s.grammar = l.fn.llamaSamplerInitGrammar(o.Vocab.ptr, cString(o.Grammar), cString("root"))
	}
	return s
}

// lazyGrammar makes a grammar sampler that waits for a trigger, its
// patterns going to C as an array of C strings.
func (l *Library) lazyGrammar(o SamplerOptions) uintptr {
	patterns := make([]*byte, len(o.GrammarTriggers))
	for i, p := range o.GrammarTriggers {
		patterns[i] = cString(p)
	}
	g := l.fn.llamaSamplerInitGrammarLazy(o.Vocab.ptr, cString(o.Grammar), cString("root"), unsafe.Pointer(&patterns[0]), uint64(len(patterns)), nil, 0)
	runtime.KeepAlive(patterns) // llama.cpp copies them
	return g
}

// TriggerWord is a grammar trigger pattern that matches word anywhere in
// the generated text, the grammar starting at it.
func TriggerWord(word string) string {
	var b strings.Builder
	for _, r := range word {
		if strings.ContainsRune(`\^$.|?*+()[]{}`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Sample picks a token from output idx of ctx's last decode (-1: the last
// output) and accepts it into the chain's state.
func (s *Sampler) Sample(ctx *Context, idx int) Token {
	if s.grammar != 0 {
		t, err := s.SampleLogits(ctx.Logits(idx))
		if err == nil {
			return t
		}
	}
	return s.lib.fn.llamaSamplerSample(s.ptr, ctx.ptr, int32(idx))
}

// Accept records a token chosen outside Sample into the chain (its
// penalties), not into the grammar: llama-server accepts a prompt's tokens
// so.
func (s *Sampler) Accept(t Token) { s.lib.fn.llamaSamplerAccept(s.ptr, t) }

// Reset clears the chain's state (and reseeds nothing).
func (s *Sampler) Reset() { s.lib.fn.llamaSamplerReset(s.ptr) }

// Close frees the chain and the samplers in it, and the grammar.
func (s *Sampler) Close() {
	if s.ptr != 0 {
		s.lib.fn.llamaSamplerFree(s.ptr)
		s.ptr = 0
	}
	if s.grammar != 0 {
		s.lib.fn.llamaSamplerFree(s.grammar)
		s.grammar = 0
	}
}

// SampleLogits picks a token from a copy of one output's logits (a
// vocabulary's worth) and accepts it into the chain's state, as Sample does
// from a context's: for callers that decode several sequences in one batch
// and sample each later, when the context has moved on.
func (s *Sampler) SampleLogits(logits []float32) (Token, error) {
	if len(logits) == 0 {
		return 0, errors.New("sample: no logits")
	}
	if cap(s.cur) < len(logits) {
		s.cur = make([]TokenData, len(logits))
	}
	cur := s.cur[:len(logits)]
	for i, l := range logits {
		cur[i] = TokenData{ID: Token(i), Logit: l}
	}
	arr := tokenDataArray{Data: &cur[0], Size: uint64(len(cur)), Selected: -1}
	if s.grammar != 0 {
		s.lib.fn.llamaSamplerApply(s.grammar, unsafe.Pointer(&arr)) // what the grammar forbids gets -inf
	}
	s.lib.fn.llamaSamplerApply(s.ptr, unsafe.Pointer(&arr))
	// The samplers may point Data elsewhere, but only within the array.
	if arr.Selected < 0 || uint64(arr.Selected) >= arr.Size {
		return 0, fmt.Errorf("sample: the sampler chain selected no token (index %d of %d)", arr.Selected, arr.Size)
	}
	s.last = unsafe.Slice(arr.Data, arr.Size)
	t := s.last[arr.Selected].ID
	s.picked = t
	runtime.KeepAlive(cur)
	s.lib.fn.llamaSamplerAccept(s.ptr, t)
	if s.grammar != 0 {
		s.lib.fn.llamaSamplerAccept(s.grammar, t)
	}
	return t, nil
}

// Candidates is what the chain left of the vocabulary at the last
// SampleLogits, with the probabilities it drew from, most probable first
// and without those of probability 0: llama-server's post-sampling
// probabilities. A greedy chain sets none; its one candidate is the token
// it picked, with probability 1, as a zero temperature gives in
// llama-server. The slice is valid until the next SampleLogits.
func (s *Sampler) Candidates() []TokenData {
	if s.last == nil {
		return nil
	}
	if s.greedy {
		return []TokenData{{ID: s.picked, P: 1}}
	}
	slices.SortStableFunc(s.last, func(a, b TokenData) int { return cmp.Compare(b.P, a.P) })
	n := 0
	for n < len(s.last) && s.last[n].P > 0 {
		n++
	}
	return s.last[:n]
}
