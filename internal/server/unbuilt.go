package server

import (
	"bytes"
	"encoding/json"
)

// unbuiltFields are request fields llama-server honours that kvtrim serve
// does not yet. Each is taken at its neutral value, the one that leaves
// the feature off (llama-server's default), so clients that send the
// defaults work; any other value is refused with a 400 naming the field,
// never answered as if it had been applied.
type unbuiltFields struct {
	AdaptiveTarget  json.RawMessage `json:"adaptive_target"`
	GrammarLazy     json.RawMessage `json:"grammar_lazy"`
	ReasoningBudget json.RawMessage `json:"reasoning_budget_tokens"`
	GrammarTriggers json.RawMessage `json:"grammar_triggers"`
	PreservedTokens json.RawMessage `json:"preserved_tokens"`
	NIndent         json.RawMessage `json:"n_indent"`
	TMaxPredictMs   json.RawMessage `json:"t_max_predict_ms"`
	TMaxPromptMs    json.RawMessage `json:"t_max_prompt_ms"`
	Lora            json.RawMessage `json:"lora"`
	Echo            json.RawMessage `json:"echo"`
}

// Why kvtrim serve refuses a group of fields.
const (
	whySampler = "kvtrim serve does not build the adaptive-p sampler yet"
	whyGrammar = "kvtrim serve has no lazy grammars yet (a GBNF \"grammar\" and \"json_schema\" work)"
	whyTools   = "kvtrim serve reads tool calls in /v1/chat/completions only"
)

// check refuses the first field given with a value other than its
// neutral one.
func (u *unbuiltFields) check() error {
	for _, f := range []struct {
		name    string
		raw     json.RawMessage
		neutral func(json.RawMessage) bool
		why     string
	}{
		{"adaptive_target", u.AdaptiveTarget, below(0), whySampler},
		{"grammar_lazy", u.GrammarLazy, isFalse, whyGrammar},
		{"reasoning_budget_tokens", u.ReasoningBudget, equals(-1), "kvtrim serve has no reasoning budget yet"},
		{"grammar_triggers", u.GrammarTriggers, empty, whyGrammar},
		{"preserved_tokens", u.PreservedTokens, empty, whyGrammar},
		{"n_indent", u.NIndent, equals(0), "kvtrim serve does not stop on indentation yet"},
		{"t_max_predict_ms", u.TMaxPredictMs, atMost(0), "kvtrim serve has no time limit on generation yet"},
		{"t_max_prompt_ms", u.TMaxPromptMs, atMost(0), "kvtrim serve has no time limit on prompts yet"},
		{"lora", u.Lora, empty, "kvtrim serve loads no LoRA adapters"},
		{"echo", u.Echo, isFalse, "kvtrim serve does not echo the prompt yet"},
	} {
		if isSet(f.raw) && !f.neutral(f.raw) {
			return badRequest("%q: %s; leave it out (or send its default) for now", f.name, f.why)
		}
	}
	return nil
}

// number reads a JSON number; ok is false for anything else.
func number(raw json.RawMessage) (v float64, ok bool) {
	return v, json.Unmarshal(raw, &v) == nil
}

func equals(want float64) func(json.RawMessage) bool {
	return func(raw json.RawMessage) bool { v, ok := number(raw); return ok && v == want }
}

func below(limit float64) func(json.RawMessage) bool {
	return func(raw json.RawMessage) bool { v, ok := number(raw); return ok && v < limit }
}

func atLeast(limit float64) func(json.RawMessage) bool {
	return func(raw json.RawMessage) bool { v, ok := number(raw); return ok && v >= limit }
}

func atMost(limit float64) func(json.RawMessage) bool {
	return func(raw json.RawMessage) bool { v, ok := number(raw); return ok && v <= limit }
}

// isFalse is a JSON false.
func isFalse(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("false")) }

// empty is an empty string, array or object.
func empty(raw json.RawMessage) bool {
	switch string(bytes.TrimSpace(raw)) {
	case `""`, `[]`, `{}`:
		return true
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return false
	}
	switch v := v.(type) {
	case string:
		return v == ""
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}

// textFormat is a response_format asking for plain text.
func textFormat(raw json.RawMessage) bool {
	var f struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(raw, &f) == nil && f.Type == "text"
}
