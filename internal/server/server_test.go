package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/internal/testenv"
)

func TestHealthWhileLoading(t *testing.T) {
	srv, err := New(testConfig(), testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	for _, path := range []string{"/health", "/props", "/v1/models"} {
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var e apiErr
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 503 || e.Error.Type != "unavailable_error" || e.Error.Code != 503 {
			t.Errorf("%s while loading: %d %+v, want 503 unavailable_error", path, resp.StatusCode, e)
		}
	}
}

func TestInfoEndpoints(t *testing.T) {
	cfg := testConfig()
	cfg.Parallel, cfg.Alias = 2, "tiny"
	ts := startServer(t, cfg)
	var health map[string]string
	ts.get("/health", 200, &health)
	if health["status"] != "ok" {
		t.Errorf("health %v", health)
	}
	var props struct {
		Settings struct {
			NCtx int `json:"n_ctx"`
		} `json:"default_generation_settings"`
		TotalSlots   int    `json:"total_slots"`
		Alias        string `json:"model_alias"`
		ChatTemplate string `json:"chat_template"`
	}
	ts.get("/props", 200, &props)
	if props.TotalSlots != 2 || props.Settings.NCtx != 512 || props.Alias != "tiny" || props.ChatTemplate != "chatml" {
		t.Errorf("props %+v, want 2 slots of 512 cells, alias tiny, chatml", props)
	}
	var models struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	ts.get("/v1/models", 200, &models)
	if models.Object != "list" || len(models.Data) != 1 || models.Data[0].ID != "tiny" || models.Data[0].Object != "model" {
		t.Errorf("models %+v", models)
	}
	var slots []struct {
		ID           int  `json:"id"`
		NCtx         int  `json:"n_ctx"`
		IsProcessing bool `json:"is_processing"`
	}
	ts.get("/slots", 200, &slots)
	if len(slots) != 2 || slots[1].ID != 1 || slots[0].NCtx != 512 || slots[0].IsProcessing {
		t.Errorf("slots %+v", slots)
	}
	ts.post("/completion", `{"prompt":"Once upon a time","n_predict":4}`, 200, nil)
	metrics := string(ts.get("/metrics", 200, nil))
	for _, want := range []string{
		"llamacpp:prompt_tokens_total 5", "llamacpp:prompt_tokens_cached_total 0", "llamacpp:n_tokens_max 9", "llamacpp:tokens_predicted_total 4", "llamacpp:requests_processing 0",
		"llamacpp:requests_deferred 0", "kvtrim_cells_kept_total 5", "kvtrim_cells_evicted_total 0",
		"kvtrim_kv_bytes_saved_total 0", "kvtrim_observe_seconds_total", "kvtrim_score_seconds_total",
		"kvtrim_evict_seconds_total", "kvtrim_compact_seconds_total", "# TYPE llamacpp:prompt_tokens_total counter",
		// llama-server's other metrics: the prompt and 3 generated tokens took 4 decodes of one slot each.
		"llamacpp:n_decode_total 4", "llamacpp:n_busy_slots_per_decode 1", "llamacpp:spec_decode_num_drafts_total 0",
		"# TYPE llamacpp:prompt_tokens_seconds gauge", "# TYPE llamacpp:predicted_tokens_seconds gauge",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q:\n%s", want, metrics)
		}
	}
	code, body := ts.do(t.Context(), "GET", "/no/such/path", "")
	wantError(t, code, body, 404, "not_found_error", "/no/such/path")
}

func TestEndpointsDisabled(t *testing.T) {
	cfg := testConfig()
	cfg.Slots, cfg.Metrics = false, false
	ts := startServer(t, cfg)
	for _, path := range []string{"/slots", "/metrics"} {
		code, body := ts.do(t.Context(), "GET", path, "")
		wantError(t, code, body, 501, "not_supported_error", "does not support")
	}
}

// completion is the fields of /completion's answer the tests check.
type completion struct {
	Content         string         `json:"content"`
	Tokens          []kvtrim.Token `json:"tokens"`
	Stop            bool           `json:"stop"`
	IDSlot          int            `json:"id_slot"`
	TokensPredicted int            `json:"tokens_predicted"`
	TokensEvaluated int            `json:"tokens_evaluated"`
	StopType        string         `json:"stop_type"`
	StoppingWord    string         `json:"stopping_word"`
	Timings         *Timings       `json:"timings"`
	Kvtrim          *KVStats       `json:"kvtrim"`
}

func TestCompletionMatchesSession(t *testing.T) {
	ts := startServer(t, testConfig())
	const prompt = "Once upon a time, there was a little"
	const n = 40
	wantTokens, wantText := direct(t, ts.model, 1024, prompt, n, kvtrim.Compression{})
	body := fmt.Sprintf(`{"prompt":%s,"n_predict":%d,"temperature":0,"return_tokens":true}`, jsonString(prompt), n)

	var got completion
	ts.post("/completion", body, 200, &got)
	if !slices.Equal(got.Tokens, wantTokens) || got.Content != wantText {
		t.Errorf("/completion gave %v %q, the session %v %q", got.Tokens, got.Content, wantTokens, wantText)
	}
	if !got.Stop || got.TokensPredicted != n || got.TokensEvaluated != 10 || got.StopType != "limit" {
		t.Errorf("/completion %+v: want stop, %d predicted, 10 evaluated, stop_type limit", got, n)
	}
	if got.Timings == nil || got.Timings.PredictedN != n || got.Timings.PromptN != 10 || got.Timings.PredictedPerSecond <= 0 {
		t.Errorf("timings %+v", got.Timings)
	}
	if got.Kvtrim == nil || got.Kvtrim.Policy != "none" || got.Kvtrim.KeptCells != 10 || got.Kvtrim.PromptTokens != 10 {
		t.Errorf("kvtrim %+v", got.Kvtrim)
	}

	// The same, streamed: deltas add up to the same text and tokens, and
	// the last event carries stop, the timings and the stats.
	code, raw := ts.do(t.Context(), "POST", "/completion", strings.Replace(body, `"temperature":0`, `"temperature":0,"stream":true`, 1))
	if code != 200 {
		t.Fatalf("stream: %d %s", code, raw)
	}
	events := sseEvents(t, raw)
	var text strings.Builder
	var tokens []kvtrim.Token
	for i, ev := range events {
		var c completion
		if err := json.Unmarshal([]byte(ev), &c); err != nil {
			t.Fatalf("event %d %q: %v", i, ev, err)
		}
		text.WriteString(c.Content)
		tokens = append(tokens, c.Tokens...)
		if last := i == len(events)-1; c.Stop != last || (last && (c.Kvtrim == nil || c.Timings == nil || c.TokensPredicted != n)) {
			t.Errorf("event %d of %d: %s", i, len(events), ev)
		}
	}
	if text.String() != wantText || !slices.Equal(tokens, wantTokens) {
		t.Errorf("stream gave %v %q, the session %v %q", tokens, text.String(), wantTokens, wantText)
	}
}

func TestOAICompletion(t *testing.T) {
	ts := startServer(t, testConfig())
	const prompt = "Once upon a time"
	_, wantText := direct(t, ts.model, 1024, prompt, 12, kvtrim.Compression{})
	var got struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Choices []struct {
			Text         string `json:"text"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			Prompt, Completion, Total int
		} `json:"usage"`
		Kvtrim *KVStats `json:"kvtrim"`
	}
	ts.post("/v1/completions", `{"prompt":"Once upon a time","max_tokens":12,"temperature":0}`, 200, &got)
	if got.Object != "text_completion" || !strings.HasPrefix(got.ID, "cmpl-") || len(got.Choices) != 1 ||
		got.Choices[0].Text != wantText || got.Choices[0].FinishReason != "length" || got.Kvtrim == nil {
		t.Errorf("got %+v, want text %q", got, wantText)
	}
	var usage struct {
		Usage oaiUsage `json:"usage"`
	}
	ts.post("/v1/completions", `{"prompt":"Once upon a time","max_tokens":12,"temperature":0}`, 200, &usage)
	// The same prompt again: the slot's cache held all of it but its last token.
	if usage.Usage != (oaiUsage{PromptTokens: 5, CompletionTokens: 12, TotalTokens: 17, PromptTokensDetails: promptTokenDetails{CachedTokens: 4}}) {
		t.Errorf("usage %+v", usage.Usage)
	}
}

func TestStopStrings(t *testing.T) {
	ts := startServer(t, testConfig())
	_, full := direct(t, ts.model, 1024, "Once upon a time", 40, kvtrim.Compression{})
	i := strings.Index(full, "Lily")
	if i < 0 {
		t.Fatalf("the continuation %q lacks Lily", full)
	}
	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{"prompt":"Once upon a time","n_predict":40,"temperature":0,"stop":["Lily","zzz"],"stream":%v}`, stream)
		code, raw := ts.do(t.Context(), "POST", "/completion", body)
		if code != 200 {
			t.Fatalf("%d %s", code, raw)
		}
		var content strings.Builder
		var last completion
		for _, ev := range sseOrWhole(t, raw, stream) {
			json.Unmarshal([]byte(ev), &last)
			content.WriteString(last.Content)
		}
		if content.String() != full[:i] || last.StopType != "word" || last.StoppingWord != "Lily" {
			t.Errorf("stream %v: content %q stop %q %q, want %q cut before Lily", stream, content.String(), last.StopType, last.StoppingWord, full[:i])
		}
	}
}

func sseOrWhole(t *testing.T, raw []byte, stream bool) []string {
	if stream {
		return sseEvents(t, raw)
	}
	return []string{string(raw)}
}

func TestChat(t *testing.T) {
	ts := startServer(t, testConfig())
	// stories260K has no chat template: the server uses chatml, as
	// llama-server does.
	prompt, err := ts.model.ApplyChatTemplate("chatml", []bindings.ChatMessage{{Role: "user", Content: "Tell me a story"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	_, wantText := direct(t, ts.model, 1024, prompt, 16, kvtrim.Compression{})
	var tmpl struct{ Prompt string }
	ts.post("/apply-template", `{"messages":[{"role":"user","content":"Tell me a story"}]}`, 200, &tmpl)
	if tmpl.Prompt != prompt {
		t.Errorf("apply-template %q, want %q", tmpl.Prompt, prompt)
	}
	body := `{"messages":[{"role":"user","content":[{"type":"text","text":"Tell me a story"}]}],"max_tokens":16,"temperature":0}`
	var got struct {
		Object  string `json:"object"`
		Choices []struct {
			Message struct{ Role, Content string }
		}
		Kvtrim *KVStats `json:"kvtrim"`
	}
	ts.post("/v1/chat/completions", body, 200, &got)
	if got.Object != "chat.completion" || len(got.Choices) != 1 || got.Choices[0].Message.Role != "assistant" ||
		got.Choices[0].Message.Content != wantText || got.Kvtrim == nil {
		t.Errorf("chat %+v, want %q", got, wantText)
	}

	code, raw := ts.do(t.Context(), "POST", "/v1/chat/completions", strings.Replace(body, `"temperature":0`, `"temperature":0,"stream":true`, 1))
	if code != 200 {
		t.Fatalf("%d %s", code, raw)
	}
	events := sseEvents(t, raw)
	if events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream does not end with [DONE]: %q", events)
	}
	var text strings.Builder
	var finish string
	for i, ev := range events[:len(events)-1] {
		var c struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta        struct{ Role, Content string }
				FinishReason *string `json:"finish_reason"`
			}
		}
		if err := json.Unmarshal([]byte(ev), &c); err != nil || c.Object != "chat.completion.chunk" || len(c.Choices) != 1 {
			t.Fatalf("chunk %d %q: %v", i, ev, err)
		}
		if (i == 0) != (c.Choices[0].Delta.Role == "assistant") {
			t.Errorf("chunk %d: role %q", i, c.Choices[0].Delta.Role)
		}
		text.WriteString(c.Choices[0].Delta.Content)
		if c.Choices[0].FinishReason != nil {
			finish = *c.Choices[0].FinishReason
		}
	}
	if text.String() != wantText || finish != "length" {
		t.Errorf("streamed chat %q finish %q, want %q length", text.String(), finish, wantText)
	}
}

func TestBadChatTemplate(t *testing.T) {
	cfg := testConfig()
	cfg.ChatTemplate = "no-such-template"
	srv, err := New(cfg, testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Start(loadModel(t))
	if err == nil || !strings.Contains(err.Error(), "chat template") {
		t.Fatalf("start with a bad chat template: %v", err)
	}
}

func TestTokenizeRoundTrip(t *testing.T) {
	ts := startServer(t, testConfig())
	const text = "Once upon a time, there was a cat."
	var tok struct{ Tokens []int }
	ts.post("/tokenize", `{"content":`+jsonString(text)+`}`, 200, &tok)
	if len(tok.Tokens) < 5 {
		t.Fatalf("tokens %v", tok.Tokens)
	}
	var withBOS struct{ Tokens []int }
	ts.post("/tokenize", `{"content":`+jsonString(text)+`,"add_special":true}`, 200, &withBOS)
	if len(withBOS.Tokens) != len(tok.Tokens)+1 || withBOS.Tokens[0] != int(ts.model.Vocab().BOS()) {
		t.Errorf("add_special: %v, without %v", withBOS.Tokens, tok.Tokens)
	}
	b, _ := json.Marshal(map[string]any{"tokens": tok.Tokens})
	var detok struct{ Content string }
	ts.post("/detokenize", string(b), 200, &detok)
	if strings.TrimSpace(detok.Content) != text {
		t.Errorf("round trip %q, want %q", detok.Content, text)
	}
	code, body := ts.do(t.Context(), "POST", "/detokenize", `{"tokens":[-1]}`)
	wantError(t, code, body, 400, "invalid_request_error", "outside the vocabulary")
}

func TestPerRequestCompression(t *testing.T) {
	ts := startServer(t, testConfig())
	prompt := story(t)
	comp := kvtrim.Compression{Policy: kvtrim.PolicySnapKV, Budget: 64}
	wantTokens, _ := direct(t, ts.model, 1024, prompt, 16, comp)
	for range 2 { // the second reuses the slot's session after a reset
		var got completion
		ts.post("/completion", `{"prompt":`+jsonString(prompt)+`,"n_predict":16,"temperature":0,"return_tokens":true,"kvtrim":{"policy":"snapkv","budget":64}}`, 200, &got)
		k := got.Kvtrim
		if k == nil || k.Policy != "snapkv" || k.KeptCells != 64 || k.EvictedCells != k.PromptTokens-64 || k.KVBytesAfter >= k.KVBytesBefore || k.Note != "" ||
			k.KVBytesPeak < k.KVBytesBefore || k.NCtxPeak < 1024 {
			t.Errorf("kvtrim %+v: want snapkv keeping 64 cells, having held the whole prompt on the way", k)
		}
		if !slices.Equal(got.Tokens, wantTokens) {
			t.Errorf("compressed generation %v, the session's %v", got.Tokens, wantTokens)
		}
	}
	// Back to the server's default, the full cache.
	var got completion
	ts.post("/completion", `{"prompt":`+jsonString(prompt)+`,"n_predict":4}`, 200, &got)
	if got.Kvtrim.Policy != "none" || got.Kvtrim.EvictedCells != 0 || got.Kvtrim.KeptCells != got.Kvtrim.PromptTokens {
		t.Errorf("default request after a compressed one: %+v", got.Kvtrim)
	}
	// Streaming and H2O make a new session per request.
	for _, kv := range []string{`{"policy":"streaming","sinks":4,"recent":60}`, `{"policy":"h2o","heavy":30,"recent":30}`} {
		ts.post("/completion", `{"prompt":`+jsonString(prompt)+`,"n_predict":8,"kvtrim":`+kv+`}`, 200, &got)
		if got.Kvtrim.EvictedCells == 0 || got.TokensPredicted != 8 {
			t.Errorf("%s: %+v", kv, got.Kvtrim)
		}
	}
	metrics := string(ts.get("/metrics", 200, nil))
	if strings.Contains(metrics, "kvtrim_cells_evicted_total 0\n") || strings.Contains(metrics, "kvtrim_kv_bytes_saved_total 0\n") {
		t.Errorf("metrics count no eviction:\n%s", metrics)
	}
}

// TestChunkedRequest: a compressed prompt longer than its slot (two slots
// of 256 cells) is prefilled in chunks of what the slot leaves beside the
// budget, as a session with a context of the slot's size prefills it: the
// answer is that session's, the stats say it was chunked, and no context
// of the request held more than the slot's cells and a chunk's.
func TestChunkedRequest(t *testing.T) {
	cfg := testConfig()
	cfg.Parallel, cfg.CtxSize = 2, 512
	ts := startServer(t, cfg)
	prompt := story(t)
	if len(prompt) > 1500 {
		prompt = prompt[:1500]
	}
	comp := kvtrim.Compression{Policy: kvtrim.PolicySnapKV, Budget: 64}
	wantTokens, _ := direct(t, ts.model, 256, prompt, 16, comp)
	var got completion
	ts.post("/completion", `{"prompt":`+jsonString(prompt)+`,"n_predict":16,"temperature":0,"return_tokens":true,"kvtrim":{"policy":"snapkv","budget":64}}`, 200, &got)
	k := got.Kvtrim
	if k == nil || k.PromptTokens <= 256 || k.KeptCells != 64 || k.Chunks == 0 || k.NCtxPeak > 256+512 || k.KVBytesPeak*int64(k.PromptTokens) > k.KVBytesBefore*256 {
		t.Fatalf("kvtrim %+v: want a prompt over 256 tokens chunked, keeping 64 cells, holding at most 256 cells at once", k)
	}
	if !slices.Equal(got.Tokens, wantTokens) {
		t.Errorf("chunked generation %v, a session's of 256 cells %v", got.Tokens, wantTokens)
	}
}
