package server

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strings"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// Timings are llama-server's per-request timings.
type Timings struct {
	CacheN              int     `json:"cache_n"`
	PromptN             int     `json:"prompt_n"`
	PromptMs            float64 `json:"prompt_ms"`
	PromptPerTokenMs    float64 `json:"prompt_per_token_ms"`
	PromptPerSecond     float64 `json:"prompt_per_second"`
	PredictedN          int     `json:"predicted_n"`
	PredictedMs         float64 `json:"predicted_ms"`
	PredictedPerTokenMs float64 `json:"predicted_per_token_ms"`
	PredictedPerSecond  float64 `json:"predicted_per_second"`
}

func timingsOf(r *result) *Timings {
	t := &Timings{CacheN: r.cacheN, PromptN: r.promptN - r.cacheN, PromptMs: r.promptMs, PredictedN: r.predictedN, PredictedMs: r.predictedMs}
	if t.PromptN > 0 && r.promptMs > 0 {
		t.PromptPerTokenMs = r.promptMs / float64(t.PromptN)
		t.PromptPerSecond = 1000 * float64(t.PromptN) / r.promptMs
	}
	// The first token costs no decode (it comes from the prompt's logits),
	// so the speed is over the decode steps, as llama-server's.
	if steps := r.predictedN - 1; steps > 0 && r.predictedMs > 0 {
		t.PredictedPerTokenMs = r.predictedMs / float64(steps)
		t.PredictedPerSecond = 1000 * float64(steps) / r.predictedMs
	}
	return t
}

// promptProgress is llama-server's prompt_progress: the prompt's tokens,
// those the slot's cache held, those in the cache now, and the time since
// the request started.
type promptProgress struct {
	Total     int   `json:"total"`
	Cache     int   `json:"cache"`
	Processed int   `json:"processed"`
	TimeMs    int64 `json:"time_ms"`
}

// KVStats is the "kvtrim" object of a response: what compression did to
// this request's cache.
type KVStats struct {
	Policy        string `json:"policy"`
	PromptTokens  int    `json:"prompt_tokens"`
	Budget        int    `json:"budget,omitempty"`
	KeptCells     int    `json:"kept_cells"`
	EvictedCells  int    `json:"evicted_cells"`
	KVBytesBefore int64  `json:"kv_bytes_before"`
	KVBytesAfter  int64  `json:"kv_bytes_after"`
	// KVBytesPeak and NCtxPeak are the most K+V bytes the request's cells
	// took at once on the way, and the most cells its contexts had
	// (kvtrim.Stats).
	KVBytesPeak int64 `json:"kv_bytes_peak"`
	NCtxPeak    int   `json:"n_ctx_peak"`
	// Chunks is how many times a chunked prefill evicted between chunks.
	Chunks    int     `json:"chunks,omitempty"`
	ObserveMs float64 `json:"observe_ms"`
	ScoreMs   float64 `json:"score_ms"`
	EvictMs   float64 `json:"evict_ms"`
	CompactMs float64 `json:"compact_ms"`
	Note      string  `json:"note,omitempty"`
}

func kvStatsOf(st kvtrim.Stats) *KVStats {
	return &KVStats{
		Policy: st.Policy, PromptTokens: st.PromptTokens, Budget: st.Budget,
		KeptCells: st.KeptCells, EvictedCells: st.EvictedCells,
		KVBytesBefore: st.KVBytesBefore, KVBytesAfter: st.KVBytesAfter,
		KVBytesPeak: st.KVBytesPeak, NCtxPeak: st.NCtxPeak, Chunks: st.Chunks,
		ObserveMs: st.ObserveMs, ScoreMs: st.ScoreMs, EvictMs: st.EvictMs, CompactMs: st.CompactMs,
		Note: st.Note,
	}
}

// completionResponse is POST /completion's answer, and each of its stream
// chunks (which leave the settings, timings and stats to the last one).
type completionResponse struct {
	Index           int             `json:"index"`
	Content         string          `json:"content"`
	Tokens          []kvtrim.Token  `json:"tokens"`
	IDSlot          int             `json:"id_slot"`
	Stop            bool            `json:"stop"`
	Model           string          `json:"model,omitempty"`
	TokensPredicted int             `json:"tokens_predicted"`
	TokensEvaluated int             `json:"tokens_evaluated"`
	Settings        *settings       `json:"generation_settings,omitempty"`
	Prompt          *string         `json:"prompt,omitempty"`
	HasNewLine      *bool           `json:"has_new_line,omitempty"`
	Truncated       *bool           `json:"truncated,omitempty"`
	StopType        string          `json:"stop_type,omitempty"`
	StoppingWord    *string         `json:"stopping_word,omitempty"`
	TokensCached    *int            `json:"tokens_cached,omitempty"`
	Timings         *Timings        `json:"timings,omitempty"`
	Kvtrim          *KVStats        `json:"kvtrim,omitempty"`
	Probs           []tokenProb     `json:"completion_probabilities,omitempty"`
	Progress        *promptProgress `json:"prompt_progress,omitempty"`
}

// settings are a request's generation settings as llama-server echoes them.
type settings struct {
	NCtx        int      `json:"n_ctx"`
	NPredict    int      `json:"n_predict"`
	Temperature float32  `json:"temperature"`
	TopK        int      `json:"top_k"`
	TopP        float32  `json:"top_p"`
	MinP        float32  `json:"min_p"`
	Seed        uint32   `json:"seed"`
	Stop        []string `json:"stop"`
	IgnoreEOS   bool     `json:"ignore_eos"`
	Stream      bool     `json:"stream"`
	KVPolicy    string   `json:"kv_policy"`
	// The adaptive-p sampler's settings, which kvtrim does not build:
	// llama-server's defaults (off), as it echoes them.
	AdaptiveTarget   float32 `json:"adaptive_target"`
	AdaptiveDecay    float32 `json:"adaptive_decay"`
	RepeatLastN      int     `json:"repeat_last_n"`
	RepeatPenalty    float32 `json:"repeat_penalty"`
	FrequencyPenalty float32 `json:"frequency_penalty"`
	PresencePenalty  float32 `json:"presence_penalty"`
	// LogitBias is the biases in use (ignore_eos' included).
	LogitBias []logitBiasJSON `json:"logit_bias"`
	// llama-server's other samplers, their order, the context shift's
	// and the grammar.
	DynatempRange     float32  `json:"dynatemp_range"`
	DynatempExponent  float32  `json:"dynatemp_exponent"`
	TopNSigma         float32  `json:"top_n_sigma"`
	XTCProbability    float32  `json:"xtc_probability"`
	XTCThreshold      float32  `json:"xtc_threshold"`
	TypicalP          float32  `json:"typical_p"`
	DRYMultiplier     float32  `json:"dry_multiplier"`
	DRYBase           float32  `json:"dry_base"`
	DRYAllowedLength  int      `json:"dry_allowed_length"`
	DRYPenaltyLastN   int      `json:"dry_penalty_last_n"`
	DRYBreakers       []string `json:"dry_sequence_breakers"`
	Mirostat          int      `json:"mirostat"`
	MirostatTau       float32  `json:"mirostat_tau"`
	MirostatEta       float32  `json:"mirostat_eta"`
	MinKeep           int      `json:"min_keep"`
	Samplers          []string `json:"samplers"`
	NKeep             int      `json:"n_keep"`
	NDiscard          int      `json:"n_discard"`
	Grammar           string   `json:"grammar"`
	PostSamplingProbs bool     `json:"post_sampling_probs"`
	TimingsPerToken   bool     `json:"timings_per_token"`
}

func settingsOf(req *Request, nCtx int) *settings {
	stop := req.Stop
	if stop == nil {
		stop = []string{}
	}
	s := req.Sampling
	return &settings{
		NCtx: nCtx, NPredict: s.NPredict, Temperature: s.Temp, TopK: s.TopK, TopP: s.TopP, MinP: s.MinP,
		Seed: s.Seed, Stop: stop, IgnoreEOS: req.IgnoreEOS, Stream: req.Stream, KVPolicy: req.Compression.PolicyName(),
		AdaptiveTarget: -1, AdaptiveDecay: 0.9, LogitBias: logitBiasesJSON(req.LogitBias),
		RepeatLastN: s.RepeatLastN, RepeatPenalty: s.RepeatPenalty, FrequencyPenalty: s.FrequencyPenalty, PresencePenalty: s.PresencePenalty,
		DynatempRange: s.DynatempRange, DynatempExponent: s.DynatempExponent, TopNSigma: s.TopNSigma,
		XTCProbability: s.XTCProbability, XTCThreshold: s.XTCThreshold, TypicalP: s.TypicalP,
		DRYMultiplier: s.DRYMultiplier, DRYBase: s.DRYBase, DRYAllowedLength: s.DRYAllowedLength, DRYPenaltyLastN: s.DRYPenaltyLastN,
		DRYBreakers: s.DRYBreakers, Mirostat: s.Mirostat, MirostatTau: s.MirostatTau, MirostatEta: s.MirostatEta, MinKeep: s.MinKeep,
		Samplers: samplerOrder(s.Order), NKeep: s.Keep, NDiscard: req.Discard, Grammar: s.Grammar,
		PostSamplingProbs: req.PostSamplingProbs, TimingsPerToken: req.TimingsPerToken,
	}
}

// samplerOrder is the names of the samplers in the order they run, as
// generation_settings shows them.
func samplerOrder(order []bindings.SamplerKind) []string {
	if order == nil {
		order = bindings.DefaultOrder
	}
	out := make([]string, len(order))
	for i, k := range order {
		out[i] = string(k)
	}
	return out
}

// finalCompletion is the full /completion answer (or the last stream
// chunk, whose content is empty). Its prompt is the prompt's tokens as
// text, special ones included, as llama-server gives it.
func (e *engine) finalCompletion(req *Request, r *result, content string) completionResponse {
	truncated := r.truncated
	zero := 0
	newLine := strings.Contains(r.content, "\n") // over the whole generation, streamed or not
	tokens := []kvtrim.Token{}
	if req.ReturnTokens && !req.Stream {
		tokens = r.tokens
	}
	prompt := e.model.Vocab().Detokenize(r.prompt, false, true)
	return completionResponse{
		Content: content, Tokens: tokens, IDSlot: r.slot, Stop: true, Model: e.name,
		TokensPredicted: r.predictedN, TokensEvaluated: r.promptN, Settings: settingsOf(req, e.slotCtx),
		Prompt: &prompt, Truncated: &truncated, StopType: r.stopType, StoppingWord: &r.stoppingWord,
		TokensCached: &zero, Timings: timingsOf(r), Kvtrim: kvStatsOf(r.stats),
		HasNewLine: &newLine,
	}
}

// nativeAnswer is the native answer to req: the final completion with
// its probabilities, cut to the request's response_fields when it names
// some. It is also what __verbose holds.
func (e *engine) nativeAnswer(req *Request, r *result, content string, index int) any {
	c := e.finalCompletion(req, r, content)
	c.Index = index
	if !req.Stream {
		c.Probs = r.probs
	}
	if len(req.ResponseFields) == 0 {
		return c
	}
	return pickFields(c, req.ResponseFields)
}

// pickFields is llama-server's response_fields: an object holding, for
// each path ("a/b" for b inside a), the value v has there, under the
// path as its key; a path v lacks is left out.
func pickFields(v any, paths []string) map[string]any {
	out := map[string]any{}
	raw, err := json.Marshal(v)
	if err != nil {
		return out
	}
	var whole map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if dec.Decode(&whole) != nil {
		return out
	}
	for _, path := range paths {
		cur, found := any(whole), true
		for _, k := range strings.Split(path, "/") {
			obj, _ := cur.(map[string]any) // nil, which holds nothing, when cur is no object
			if cur, found = obj[k]; !found {
				break
			}
		}
		if found {
			out[path] = cur
		}
	}
	return out
}

// verbose reports whether req's OpenAI-shaped answer carries __verbose.
func (e *engine) verbose(req *Request) bool {
	if req.Verbose != nil {
		return *req.Verbose
	}
	return e.verboseAll
}

// OpenAI shapes.

type oaiResponse struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Choices           []oaiChoice     `json:"choices"`
	Usage             *oaiUsage       `json:"usage,omitempty"`
	Timings           *Timings        `json:"timings,omitempty"`
	Kvtrim            *KVStats        `json:"kvtrim,omitempty"`
	Progress          *promptProgress `json:"prompt_progress,omitempty"`
	// Verbose is llama-server's __verbose: the native answer, when the
	// request or the server asks for it.
	Verbose any `json:"__verbose,omitempty"`
}

type oaiChoice struct {
	Index        int         `json:"index"`
	Text         *string     `json:"text,omitempty"`
	Message      *oaiMessage `json:"message,omitempty"`
	Delta        any         `json:"delta,omitempty"` // *oaiMessage, or roleDelta
	Logprobs     any         `json:"logprobs"`
	FinishReason *string     `json:"finish_reason"`
}

type oaiMessage struct {
	Role             string        `json:"role,omitempty"`
	Content          *string       `json:"content,omitempty"`
	ReasoningContent *string       `json:"reasoning_content,omitempty"`
	ToolCalls        []oaiToolCall `json:"tool_calls,omitempty"`
}

// roleDelta is the first chunk's delta of a chat stream: the role, and a
// content that is null, not absent, as llama-server sends it.
type roleDelta struct {
	Role    string  `json:"role"`
	Content *string `json:"content"`
}

type oaiUsage struct {
	PromptTokens        int                `json:"prompt_tokens"`
	CompletionTokens    int                `json:"completion_tokens"`
	TotalTokens         int                `json:"total_tokens"`
	PromptTokensDetails promptTokenDetails `json:"prompt_tokens_details"`
}

// promptTokenDetails says how many prompt tokens the slot's cache held
// already (llama-server's cached_tokens).
type promptTokenDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

func usageOf(r *result) *oaiUsage {
	return &oaiUsage{PromptTokens: r.promptN, CompletionTokens: r.predictedN, TotalTokens: r.promptN + r.predictedN,
		PromptTokensDetails: promptTokenDetails{CachedTokens: r.cacheN}}
}

// finishReason is OpenAI's name for a stop type.
func finishReason(stopType string) *string {
	reason := "stop"
	if stopType == stopLimit {
		reason = "length"
	}
	return &reason
}

// newID is a response id: prefix and 32 random hex digits.
func newID(prefix string) string {
	var b [16]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
