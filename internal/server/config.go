package server

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// RandomSeed asks for a random sampling seed (llama.cpp's LLAMA_DEFAULT_SEED).
const RandomSeed = math.MaxUint32

// Sampling are the generation settings a request may override.
type Sampling struct {
	// NPredict is the most tokens to generate (-1: until an end token or a
	// full context).
	NPredict int
	Temp     float32 // <= 0: greedy
	TopK     int     // <= 0: off
	TopP     float32 // 1: off
	MinP     float32 // 0: off
	Seed     uint32  // RandomSeed: a random one per request
	// Penalties over the last RepeatLastN tokens, the prompt's included
	// (-1: the slot's context; 0: off): RepeatPenalty divides (1: off; 0
	// counts as 1), FrequencyPenalty and PresencePenalty subtract (0: off).
	RepeatLastN                                      int
	RepeatPenalty, FrequencyPenalty, PresencePenalty float32
	// Keep is the prompt tokens a context shift keeps (n_keep, --keep; -1:
	// all of them).
	Keep int
	// Grammar is a GBNF grammar every generated token must follow (start
	// symbol root; grammar, --grammar), or empty. With GrammarTriggers it
	// is lazy: it applies from the first match of one of them on (a tool
	// call's opening; bindings.SamplerOptions.GrammarTriggers).
	Grammar         string
	GrammarTriggers []string
	// llama-server's other samplers, neutral by default (their meaning is
	// bindings.SamplerOptions'; DRYPenaltyLastN -1 is the slot's context),
	// and the order the samplers run in (nil: llama-server's).
	TopNSigma, TypicalP, XTCProbability, XTCThreshold float32
	DynatempRange, DynatempExponent                   float32
	DRYMultiplier, DRYBase                            float32
	DRYAllowedLength, DRYPenaltyLastN                 int
	DRYBreakers                                       []string
	Mirostat                                          int
	MirostatTau, MirostatEta                          float32
	MinKeep                                           int
	Order                                             []bindings.SamplerKind
}

// DefaultSampling are llama-server's defaults.
func DefaultSampling() Sampling {
	return Sampling{
		NPredict: -1, Temp: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, Seed: RandomSeed, RepeatLastN: 64, RepeatPenalty: 1,
		TopNSigma: -1, TypicalP: 1, XTCThreshold: 0.1, DynatempExponent: 1,
		DRYBase: 1.75, DRYAllowedLength: 2, DRYPenaltyLastN: 64, DRYBreakers: []string{"\n", ":", "\"", "*"},
		MirostatTau: 5, MirostatEta: 0.1,
	}
}

// Config is what the server serves and how.
type Config struct {
	// Parallel is the number of slots (-np): sequences of one context,
	// decoded together.
	Parallel int
	// CtxSize is the cells of all slots together (-c), split evenly; 0 is
	// the model's training context.
	CtxSize int
	// Batch and UBatch are llama.cpp's logical and physical batch sizes.
	Batch, UBatch int
	// Threads is the CPU threads llama.cpp decodes with (<= 0: one per
	// CPU): the slots' batched decodes, and a compressed prompt's temporary
	// context when it has one.
	Threads int
	// FlashAttn is "on", "off" or "auto".
	FlashAttn string
	// Alias is the model's names (-a), comma-separated: the first in
	// sorted order names it in responses; "" is the model's path. Tags
	// are informational names (--tags), comma-separated. /v1/models
	// lists both.
	Alias, Tags string
	// APIKeys, when any, are required on every endpoint but /health,
	// /v1/health and / (and OPTIONS requests), as in llama-server.
	APIKeys []string
	// Metrics enables GET /metrics; Slots GET /slots; Props POST /props,
	// which changes the default compression of later requests.
	Metrics, Slots, Props bool
	// CORSProxy enables /cors-proxy (llama-server's --webui-mcp-proxy),
	// which its web UI uses to reach MCP servers; off, it answers 403.
	CORSProxy bool
	// SleepIdle, when positive, frees the model and the slots after that
	// long without a request and loads them again on the next one
	// (llama-server's --sleep-idle-seconds); it needs Server.Run.
	SleepIdle time.Duration
	// ContextShift shifts a slot's context when a generation fills it
	// (llama-server's --context-shift): Sampling.Keep tokens of the prompt
	// stay, half of the rest goes. A compressed cache, whose positions
	// have gaps, stops at the full slot instead.
	ContextShift bool
	// Verbose adds llama-server's __verbose object (the native answer) to
	// every OpenAI-shaped answer unless a request says otherwise, as
	// llama-server's --verbose does.
	Verbose bool
	// ChatTemplate is a llama.cpp template name or text; "" is the model's
	// own, or chatml when it has none (as llama-server does).
	ChatTemplate string
	// Jinja renders chats with the Jinja engine (--jinja, llama-server's
	// default): the ChatTemplate text, else the model's own template, run
	// as Jinja; without it, or for a built-in template's name, llama.cpp's
	// built-in templates. With JinjaStrict (--jinja given) a template the
	// engine cannot compile fails the start; without it the server warns
	// and falls back to the built-in templates.
	Jinja, JinjaStrict bool
	// TemplateKwargs are variables every Jinja rendering gets
	// (--chat-template-kwargs, and enable_thinking from --reasoning); a
	// request's chat_template_kwargs override them.
	TemplateKwargs map[string]any
	// ReasoningFormat is how a thinking model's reasoning is returned
	// (--reasoning-format): "auto" or "deepseek" (the default, "" too) in
	// reasoning_content, apart from the content; "deepseek-legacy" there
	// and left in the content; "none" left in the content only.
	ReasoningFormat string
	// NoPrefillAssistant renders a final assistant message as a finished
	// turn (--no-prefill-assistant); by default the prompt continues it.
	NoPrefillAssistant bool
	// Sampling are the defaults of requests.
	Sampling Sampling
	// Compression is the default KV compression of every slot.
	Compression kvtrim.Compression
	// QueueSize is how many requests may wait for a slot: 0 (the
	// default) queues every request, as llama-server does; past a bound,
	// a request is answered 503 with Retry-After.
	QueueSize int
	// PromptReuse is how slots reuse what they decoded: the slot a
	// request goes to, and the prompt cache (DefaultPromptReuse is
	// llama-server's; the zero value turns both off).
	PromptReuse PromptReuse
	// CORS is how browsers' cross-origin requests are answered (the zero
	// value is llama-server's default: every origin, with credentials).
	CORS CORS
	// GCP is Vertex AI's prediction route (AIP_MODE=PREDICTION).
	GCP GCP
	// SlotSavePath is the folder slot save and restore use
	// (--slot-save-path); "" turns the actions off.
	SlotSavePath string
	// MaxBodyBytes bounds request bodies (0: 16 MiB).
	MaxBodyBytes int64
	// WriteTimeout bounds each write of a response, as llama-server's
	// --timeout bounds its socket writes: a client that stops reading a
	// stream for that long loses its request and its slot (0: no bound).
	WriteTimeout time.Duration
}

// Limits that catch typos before anything is allocated.
const (
	maxParallel = 1024
	maxCtx      = 1 << 24
	maxThreads  = 1024
	maxPredict  = 1 << 30
)

// withDefaults fills the zero values that have defaults.
func (c Config) withDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 16 << 20
	}
	if c.FlashAttn == "" {
		c.FlashAttn = "auto"
	}
	return c
}

// Validate checks the configuration without loading anything.
func (c Config) Validate() error {
	switch {
	case c.Parallel < 1 || c.Parallel > maxParallel:
		return fmt.Errorf("parallel %d: give between 1 and %d slots (-np)", c.Parallel, maxParallel)
	case c.CtxSize < 0 || c.CtxSize > maxCtx:
		return fmt.Errorf("ctx-size %d: give between 1 and %d cells (0: the model's)", c.CtxSize, maxCtx)
	case c.CtxSize > 0 && c.CtxSize < c.Parallel:
		return fmt.Errorf("ctx-size %d is smaller than the %d slots (-np): each slot gets ctx-size/np cells", c.CtxSize, c.Parallel)
	case c.Batch < 0 || c.Batch > maxCtx:
		return fmt.Errorf("batch-size %d: give between 1 and %d", c.Batch, maxCtx)
	case c.UBatch < 0 || c.UBatch > maxCtx:
		return fmt.Errorf("ubatch-size %d: give between 1 and %d", c.UBatch, maxCtx)
	case c.Threads > maxThreads:
		return fmt.Errorf("threads %d: at most %d", c.Threads, maxThreads)
	case c.QueueSize < 0:
		return fmt.Errorf("queue size %d: give a count >= 0", c.QueueSize)
	case math.IsNaN(c.PromptReuse.Similarity) || c.PromptReuse.Similarity < 0 || c.PromptReuse.Similarity > 1:
		return fmt.Errorf("slot prompt similarity %v: give a share between 0 and 1 (0: off)", c.PromptReuse.Similarity)
	case c.PromptReuse.CacheMiB < -1:
		return fmt.Errorf("cache-ram %d: give MiB, 0 to disable the prompt cache or -1 for no limit", c.PromptReuse.CacheMiB)
	case c.MaxBodyBytes < 0:
		return fmt.Errorf("max body bytes %d: give a size >= 0", c.MaxBodyBytes)
	case c.WriteTimeout < 0:
		return fmt.Errorf("write timeout %v: give a duration >= 0", c.WriteTimeout)
	}
	for _, k := range c.APIKeys {
		if k == "" {
			return errors.New("empty API key: give a non-empty key")
		}
	}
	if _, err := kvtrim.ParseFlashAttn(c.FlashAttn); err != nil {
		return err
	}
	if err := c.Sampling.validate(); err != nil {
		return err
	}
	if err := c.Compression.Check(); err != nil {
		return fmt.Errorf("kv compression: %w", err)
	}
	return nil
}

// validate checks sampling settings, from flags or a request.
func (s Sampling) validate() error {
	switch {
	case s.NPredict < -1 || s.NPredict > maxPredict:
		return fmt.Errorf("n_predict %d: give a count of tokens up to %d, or -1 for no limit", s.NPredict, maxPredict)
	case isNaN32(s.Temp) || isNaN32(s.TopP) || isNaN32(s.MinP) || math.IsInf(float64(s.Temp), 0):
		return errors.New("sampling settings must be finite numbers")
	case s.TopP < 0 || s.TopP > 1:
		return fmt.Errorf("top_p %g: give a value in [0, 1]", s.TopP)
	case s.MinP < 0 || s.MinP > 1:
		return fmt.Errorf("min_p %g: give a value in [0, 1]", s.MinP)
	case isNaN32(s.RepeatPenalty) || isNaN32(s.FrequencyPenalty) || isNaN32(s.PresencePenalty) ||
		math.IsInf(float64(s.FrequencyPenalty), 0) || math.IsInf(float64(s.PresencePenalty), 0) || math.IsInf(float64(s.RepeatPenalty), 0):
		return errors.New("penalties must be finite numbers")
	case s.RepeatPenalty < 0:
		return fmt.Errorf("repeat_penalty %g: give a value > 0 (1: off)", s.RepeatPenalty)
	case s.RepeatLastN < -1:
		return fmt.Errorf("repeat_last_n %d: give a count of tokens, 0 for off or -1 for the context", s.RepeatLastN)
	case s.Mirostat < 0 || s.Mirostat > 2:
		return fmt.Errorf("mirostat %d: give 0 (off), 1 or 2", s.Mirostat)
	case s.XTCProbability < 0 || s.XTCProbability > 1 || s.XTCThreshold < 0 || s.XTCThreshold > 1:
		return fmt.Errorf("xtc_probability %g, xtc_threshold %g: give values in [0, 1]", s.XTCProbability, s.XTCThreshold)
	case s.DRYAllowedLength < 0 || s.DRYPenaltyLastN < -1 || s.MinKeep < 0:
		return fmt.Errorf("dry_allowed_length %d, dry_penalty_last_n %d, min_keep %d: give counts of tokens (dry_penalty_last_n -1: the context)", s.DRYAllowedLength, s.DRYPenaltyLastN, s.MinKeep)
	case isNaN32(s.TopNSigma) || isNaN32(s.TypicalP) || isNaN32(s.XTCProbability) || isNaN32(s.XTCThreshold) || isNaN32(s.DynatempRange) ||
		isNaN32(s.DynatempExponent) || isNaN32(s.DRYMultiplier) || isNaN32(s.DRYBase) || isNaN32(s.MirostatTau) || isNaN32(s.MirostatEta):
		return errors.New("sampling settings must be finite numbers")
	case s.Keep < -1:
		return fmt.Errorf("n_keep %d: give the prompt tokens a context shift keeps, or -1 for all of them", s.Keep)
	}
	return nil
}

func isNaN32(f float32) bool { return f != f }
