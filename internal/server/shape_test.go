package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim/internal/testenv"
)

// TestResponseShapes: fields llama-server's answers carry that clients
// and its test suite read: has_new_line and the adaptive sampler's
// settings in /completion's answer, and a system_fingerprint of
// llama-server's form ("b" then the build) in the OpenAI ones.
func TestResponseShapes(t *testing.T) {
	cfg := testConfig()
	cfg.Metrics = true
	ts := startServer(t, cfg)
	code, b := ts.do(t.Context(), http.MethodPost, "/completion", `{"prompt":"Once upon a time","n_predict":24,"temperature":0}`)
	var c map[string]any
	if err := json.Unmarshal(b, &c); code != 200 || err != nil {
		t.Fatalf("/completion: %d %s %v", code, b, err)
	}
	nl, ok := c["has_new_line"].(bool)
	if !ok || nl != strings.Contains(c["content"].(string), "\n") {
		t.Errorf("has_new_line %v for content %q", c["has_new_line"], c["content"])
	}
	gs, _ := c["generation_settings"].(map[string]any)
	if gs["adaptive_target"] != -1.0 || gs["adaptive_decay"] == nil {
		t.Errorf("generation_settings %v", gs)
	}
	code, b = ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`)
	var chat struct {
		SystemFingerprint string `json:"system_fingerprint"`
	}
	if err := json.Unmarshal(b, &chat); code != 200 || err != nil || !strings.HasPrefix(chat.SystemFingerprint, "b"+strings.TrimPrefix(testenv.Library(t).Version, "b")+"-kvtrim") {
		t.Errorf("chat: %d %v, system_fingerprint %q", code, err, chat.SystemFingerprint)
	}
	// The same chat again: the slot's cache holds all of the prompt but
	// its last token, which usage says as llama-server does.
	code, b = ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`)
	var usage struct {
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
			Details      struct {
				CachedTokens *int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(b, &usage); code != 200 || err != nil || usage.Usage.Details.CachedTokens == nil || *usage.Usage.Details.CachedTokens != usage.Usage.PromptTokens-1 {
		t.Errorf("usage of a repeated chat: %d %v %s", code, err, b)
	}
	resp, err := http.Get(ts.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Process-Start-Time-Unix") == "" {
		t.Errorf("/metrics headers %v: no Process-Start-Time-Unix", resp.Header)
	}
}

// TestChatStreamStartsWithRole: a chat stream's first chunk is the
// assistant's role with a null content, and no later chunk repeats the
// role, as llama-server streams (and its suite checks).
func TestChatStreamStartsWithRole(t *testing.T) {
	ts := startServer(t, testConfig())
	code, b := ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true}`)
	if code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	var deltas []map[string]any
	for _, line := range strings.Split(string(b), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta map[string]any `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		if len(chunk.Choices) > 0 {
			deltas = append(deltas, chunk.Choices[0].Delta)
		}
	}
	if len(deltas) < 2 {
		t.Fatalf("chunks %v", deltas)
	}
	if c, ok := deltas[0]["content"]; deltas[0]["role"] != "assistant" || !ok || c != nil {
		t.Errorf("first delta %v, want role assistant and content null", deltas[0])
	}
	for _, d := range deltas[1:] {
		if _, ok := d["role"]; ok {
			t.Errorf("a later delta repeats the role: %v", d)
		}
	}
}

// TestSlotsShowLastRequest: /slots shows no params for a slot that has
// served nothing, then its last request's settings, as llama-server's;
// /props keeps the server's defaults and says it is not sleeping.
func TestSlotsShowLastRequest(t *testing.T) {
	cfg := testConfig()
	cfg.Slots = true
	ts := startServer(t, cfg)
	var slots []map[string]any
	ts.get("/slots", 200, &slots)
	if _, ok := slots[0]["params"]; ok {
		t.Errorf("an unused slot has params: %v", slots[0])
	}
	ts.post("/completion", `{"prompt":"Once","n_predict":3}`, 200, nil)
	ts.get("/slots", 200, &slots)
	params, _ := slots[0]["params"].(map[string]any)
	if params["n_predict"] != 3.0 {
		t.Errorf("after a request of n_predict 3: %v", slots[0])
	}
	var props map[string]any
	ts.get("/props", 200, &props)
	dgs, _ := props["default_generation_settings"].(map[string]any)
	p, _ := dgs["params"].(map[string]any)
	if p["n_predict"] != -1.0 || props["is_sleeping"] != false {
		t.Errorf("/props %v", props)
	}
}

// TestContentPartsJoin: text parts of a chat message are joined with
// newlines, as llama.cpp's chat layer joins them for a template, and with
// blank lines when the message is continued.
func TestContentPartsJoin(t *testing.T) {
	var c contentField
	if err := json.Unmarshal([]byte(`[{"type":"text","text":"What is"},{"type":"text","text":"the best book"}]`), &c); err != nil || c.text != "What is\nthe best book" || c.continued() != "What is\n\nthe best book" {
		t.Errorf("%+v, %v", c, err)
	}
}

// TestFullContextTruncates: as llama-server without context shift, a
// generation stops when the prompt and the answer fill the slot's context
// and says it was truncated; a limit reached first does not. Stream
// chunks carry their tokens.
func TestFullContextTruncates(t *testing.T) {
	cfg := testConfig()
	cfg.CtxSize = 256
	ts := startServer(t, cfg)
	var got struct {
		TokensPredicted int    `json:"tokens_predicted"`
		TokensEvaluated int    `json:"tokens_evaluated"`
		Truncated       bool   `json:"truncated"`
		StopType        string `json:"stop_type"`
	}
	ts.post("/completion", `{"prompt":"Once upon a time","n_predict":-1,"ignore_eos":true}`, 200, &got)
	if got.TokensEvaluated+got.TokensPredicted != 256 || !got.Truncated || got.StopType != "limit" {
		t.Errorf("a full context: %+v", got)
	}
	ts.post("/completion", `{"prompt":"Once upon a time","n_predict":10,"ignore_eos":true}`, 200, &got)
	if got.TokensPredicted != 10 || got.Truncated {
		t.Errorf("n_predict 10: %+v", got)
	}
	code, b := ts.do(t.Context(), http.MethodPost, "/completion", `{"prompt":"Once upon a time","n_predict":4,"stream":true}`)
	chunks := 0
	for _, line := range strings.Split(string(b), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var c struct {
			Stop   bool
			Tokens []int
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil || !c.Stop && len(c.Tokens) == 0 {
			t.Errorf("stream chunk %s: %v", data, err)
		}
		chunks++
	}
	if code != 200 || chunks < 2 {
		t.Errorf("stream: %d %s", code, b)
	}
}

// TestLogitBias: logit_bias as llama-server reads it (pairs or an object,
// token ids or strings, false bans) changes what greedy decoding picks,
// and generation_settings echoes the biases, ignore_eos' banned
// end-of-generation tokens (null: -Inf) among them.
func TestLogitBias(t *testing.T) {
	ts := startServer(t, testConfig())
	type answer struct {
		Content  string
		Tokens   []int
		Settings struct {
			LogitBias []struct {
				Bias  *float64
				Token int
			} `json:"logit_bias"`
		} `json:"generation_settings"`
	}
	var plain answer
	ts.post("/completion", `{"prompt":"Once upon a time","n_predict":6,"temperature":0,"return_tokens":true}`, 200, &plain)
	first := plain.Tokens[0]
	for _, bias := range []string{fmt.Sprintf(`[[%d,false]]`, first), fmt.Sprintf(`{"%d":-100}`, first)} {
		var got answer
		ts.post("/completion", `{"prompt":"Once upon a time","n_predict":6,"temperature":0,"return_tokens":true,"logit_bias":`+bias+`}`, 200, &got)
		if got.Tokens[0] == first || len(got.Settings.LogitBias) != 1 || got.Settings.LogitBias[0].Token != first {
			t.Errorf("banning token %d with %s: %v, settings %+v", first, bias, got.Tokens, got.Settings)
		}
	}
	var eos answer
	ts.post("/completion", `{"prompt":"Once upon a time","n_predict":4,"ignore_eos":true}`, 200, &eos)
	if len(eos.Settings.LogitBias) == 0 || eos.Settings.LogitBias[0].Bias != nil {
		t.Errorf("ignore_eos: logit_bias %+v", eos.Settings.LogitBias)
	}
}

// TestPenalties: the repeat, frequency and presence penalties go through
// libllama's penalties sampler (greedy included): a strong one changes a
// greedy answer that repeats words, and generation_settings echoes them.
func TestPenalties(t *testing.T) {
	ts := startServer(t, testConfig())
	type answer struct {
		Content  string
		Settings map[string]any `json:"generation_settings"`
	}
	var plain, penalized answer
	const prompt = `"prompt":"Once upon a time, there was a little girl. The little girl","n_predict":32,"temperature":0`
	ts.post("/completion", `{`+prompt+`}`, 200, &plain)
	ts.post("/completion", `{`+prompt+`,"repeat_penalty":1.8,"presence_penalty":1,"repeat_last_n":-1}`, 200, &penalized)
	if plain.Content == penalized.Content {
		t.Errorf("penalties changed nothing: %q", plain.Content)
	}
	if s := penalized.Settings; s["repeat_penalty"] != 1.8 || s["presence_penalty"] != 1.0 || s["repeat_last_n"] != -1.0 {
		t.Errorf("settings %v", s)
	}
}

// TestChatStreamUsage: a chat stream ends as llama-server's: the finish
// chunk, then, with stream_options.include_usage, a chunk of no choices
// carrying the usage; the timings ride on the last chunk.
func TestChatStreamUsage(t *testing.T) {
	ts := startServer(t, testConfig())
	type chunk struct {
		Choices []json.RawMessage
		Usage   *struct {
			CompletionTokens int `json:"completion_tokens"`
		}
		Timings *Timings
	}
	read := func(body string) []chunk {
		code, b := ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", body)
		if code != 200 {
			t.Fatalf("%d %s", code, b)
		}
		var out []chunk
		for _, line := range strings.Split(string(b), "\n") {
			if data, ok := strings.CutPrefix(line, "data: "); ok && data != "[DONE]" {
				var c chunk
				if err := json.Unmarshal([]byte(data), &c); err != nil {
					t.Fatal(err)
				}
				out = append(out, c)
			}
		}
		return out
	}
	const msgs = `"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stream":true`
	with := read(`{` + msgs + `,"stream_options":{"include_usage":true}}`)
	last := with[len(with)-1]
	if len(last.Choices) != 0 || last.Usage == nil || last.Usage.CompletionTokens != 3 || last.Timings == nil || with[len(with)-2].Usage != nil {
		t.Errorf("with include_usage, the last chunks: %+v, %+v", with[len(with)-2], last)
	}
	without := read(`{` + msgs + `}`)
	for _, c := range without {
		if c.Usage != nil {
			t.Errorf("a usage without include_usage: %+v", c)
		}
	}
	if last := without[len(without)-1]; len(last.Choices) != 1 || last.Timings == nil {
		t.Errorf("without include_usage, the last chunk: %+v", last)
	}
}

// TestTimingsPerToken: with timings_per_token every streamed text chunk
// carries the timings so far (not the role chunk), as llama-server's.
func TestTimingsPerToken(t *testing.T) {
	ts := startServer(t, testConfig())
	code, b := ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true,"timings_per_token":true}`)
	if code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	n := 0
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n\n") {
		data, _ := strings.CutPrefix(line, "data: ")
		if data == "[DONE]" {
			continue
		}
		var c struct{ Timings *Timings }
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatal(err)
		}
		switch {
		case i == 0 && c.Timings != nil:
			t.Errorf("the role chunk has timings: %s", data)
		case i > 0 && (c.Timings == nil || c.Timings.PredictedN < 1):
			t.Errorf("chunk %d without timings: %s", i, data)
		}
		n++
	}
	if n < 3 {
		t.Errorf("%d chunks: %s", n, b)
	}
}

// TestReturnProgress: a stream with return_progress reports the prompt's
// decode as llama-server does: first the cached tokens, then after each
// batch, up to the whole prompt; a prompt that continues the slot's cache
// starts from what it held.
func TestReturnProgress(t *testing.T) {
	cfg := testConfig()
	cfg.Batch, cfg.UBatch = 64, 64
	ts := startServer(t, cfg)
	progress := func(body string) []promptProgress {
		code, b := ts.do(t.Context(), http.MethodPost, "/completion", body)
		if code != 200 {
			t.Fatalf("%d %s", code, b)
		}
		var out []promptProgress
		for _, line := range strings.Split(string(b), "\n") {
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				continue
			}
			var c struct {
				Progress *promptProgress `json:"prompt_progress"`
			}
			if err := json.Unmarshal([]byte(data), &c); err != nil {
				t.Fatal(err)
			}
			if c.Progress != nil {
				out = append(out, *c.Progress)
			}
		}
		return out
	}
	prompt := strings.Repeat("This is a test. ", 40)
	first := progress(`{"prompt":"` + prompt + `","n_predict":2,"stream":true,"return_progress":true}`)
	if len(first) < 3 || first[0].Cache != 0 || first[0].Processed != 0 || first[len(first)-1].Processed != first[0].Total {
		t.Fatalf("progress %+v", first)
	}
	for i := 1; i < len(first); i++ {
		if first[i].Processed <= first[i-1].Processed || first[i].Processed-first[i-1].Processed > 64 || first[i].Total != first[0].Total {
			t.Errorf("progress %+v", first)
		}
	}
	again := progress(`{"prompt":"` + prompt + `And more.","n_predict":2,"stream":true,"return_progress":true}`)
	if len(again) != 2 || again[0].Cache == 0 || again[0].Processed != again[0].Cache || again[1].Processed != again[1].Total {
		t.Errorf("progress after the cache: %+v", again)
	}
}

// TestSeveralChoices: OpenAI's n answers n choices, indexed, each as a
// request alone would (greedy: the same text), the usage summing the
// completions and counting the prompt once; a fixed slot queues them.
func TestSeveralChoices(t *testing.T) {
	cfg := testConfig()
	cfg.Parallel = 2
	ts := startServer(t, cfg)
	var one, three struct {
		Choices []struct {
			Index        int
			Message      struct{ Content string }
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	const chat = `"messages":[{"role":"user","content":"What is the best book"}],"max_tokens":8,"temperature":0`
	ts.post("/v1/chat/completions", `{`+chat+`}`, 200, &one)
	ts.post("/v1/chat/completions", `{`+chat+`,"n":3,"id_slot":0}`, 200, &three)
	if len(three.Choices) != 3 || three.Usage.PromptTokens != one.Usage.PromptTokens || three.Usage.CompletionTokens != 3*one.Usage.CompletionTokens {
		t.Fatalf("n 3: %+v", three)
	}
	for i, c := range three.Choices {
		if c.Index != i || c.Message.Content != one.Choices[0].Message.Content || c.FinishReason != "length" {
			t.Errorf("choice %d: %+v, alone %+v", i, c, one.Choices[0])
		}
	}
}

// TestObjectPrompt: llama-server's {"prompt_string": ...} prompt answers as
// the plain string does.
func TestObjectPrompt(t *testing.T) {
	ts := startServer(t, testConfig())
	var plain, object struct{ Content string }
	ts.post("/completion", `{"prompt":"Once upon a time","n_predict":8,"temperature":0}`, 200, &plain)
	ts.post("/completion", `{"prompt":{"prompt_string":"Once upon a time"},"n_predict":8,"temperature":0}`, 200, &object)
	if plain.Content != object.Content || plain.Content == "" {
		t.Errorf("object prompt %q, string prompt %q", object.Content, plain.Content)
	}
}

// TestSeveralPrompts: as llama-server, /completion answers several prompts
// of one request with a list (token ids, strings and object prompts of the
// same text answer alike); /v1/completions with a choice each; a prompt
// may mix token ids and strings.
func TestSeveralPrompts(t *testing.T) {
	cfg := testConfig()
	cfg.Parallel = 2
	cfg.Sampling.Temp = 0
	ts := startServer(t, cfg)
	var toks struct{ Tokens []int }
	ts.post("/tokenize", `{"content":"Once upon a time","add_special":true}`, 200, &toks)
	ids, _ := json.Marshal(toks.Tokens)
	var list []struct {
		Index   int
		Content string
	}
	ts.post("/completion", `{"prompt":[`+string(ids)+`,"Once upon a time",{"prompt_string":"Once upon a time"}],"n_predict":6}`, 200, &list)
	if len(list) != 3 || list[0].Content == "" || list[1].Content != list[0].Content || list[2].Content != list[0].Content || list[2].Index != 2 {
		t.Errorf("three prompts: %+v", list)
	}
	var oai struct {
		Choices []struct {
			Index int
			Text  string
		}
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		}
	}
	ts.post("/v1/completions", `{"prompt":["Once upon a time","Once upon a time"],"max_tokens":6}`, 200, &oai)
	if len(oai.Choices) != 2 || oai.Choices[1].Index != 1 || oai.Choices[0].Text != list[0].Content || oai.Usage.PromptTokens != 2*len(toks.Tokens) {
		t.Errorf("two prompts: %+v", oai)
	}
	var mixed struct{ Content string }
	ts.post("/completion", `{"prompt":[`+strings.Trim(string(ids), "[]")+`," there"],"n_predict":4}`, 200, &mixed)
	if mixed.Content == "" {
		t.Errorf("a mixed prompt: %+v", mixed)
	}
}

// TestVerboseAndResponseFields: the native answer's prompt is the
// prompt's tokens as text, special ones included; "verbose" (or the
// server's --verbose) adds that answer to an OpenAI one as __verbose, and
// response_fields cuts a native answer to the paths it names, as
// llama-server does.
func TestVerboseAndResponseFields(t *testing.T) {
	cfg := testConfig()
	ts := startServer(t, cfg)
	const prompt = "I believe the meaning of life is"
	var whole map[string]any
	ts.post("/completion", `{"prompt":"`+prompt+`","n_predict":4,"temperature":0}`, 200, &whole)
	tokens, err := ts.model.Vocab().Tokenize(prompt, true, true)
	if err != nil {
		t.Fatal(err)
	}
	wantPrompt := ts.model.Vocab().Detokenize(tokens, false, true)
	if whole["prompt"] != wantPrompt || !strings.HasSuffix(wantPrompt, prompt) {
		t.Errorf("prompt %q, want the tokens' text %q", whole["prompt"], wantPrompt)
	}

	var cut map[string]any
	ts.post("/completion", `{"prompt":"`+prompt+`","n_predict":4,"temperature":0,"response_fields":["content","generation_settings/n_predict","prompt","no/such"]}`, 200, &cut)
	if len(cut) != 3 || cut["content"] != whole["content"] || cut["generation_settings/n_predict"] != 4.0 || cut["prompt"] != wantPrompt {
		t.Errorf("response_fields answer %v", cut)
	}

	const chat = `"messages":[{"role":"system","content":"Book"},{"role":"user","content":"What is the best book"}],"max_tokens":2`
	for _, tc := range []struct {
		body    string
		verbose bool
	}{{`{` + chat + `}`, false}, {`{` + chat + `,"verbose":true}`, true}, {`{` + chat + `,"verbose":false}`, false}} {
		var resp map[string]any
		ts.post("/v1/chat/completions", tc.body, 200, &resp)
		v, ok := resp["__verbose"].(map[string]any)
		if ok != tc.verbose {
			t.Fatalf("%s: __verbose %v", tc.body, resp["__verbose"])
		}
		if ok && (!strings.Contains(v["prompt"].(string), "Book") || v["content"] != resp["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"]) {
			t.Errorf("__verbose %v", v)
		}
	}
	cfg.Verbose = true
	verbose := startServer(t, cfg)
	for _, tc := range []struct {
		path, body string
		verbose    bool
	}{
		{"/v1/chat/completions", `{` + chat + `}`, true},
		{"/v1/completions", `{"prompt":"Once","max_tokens":2}`, true},
		{"/v1/chat/completions", `{` + chat + `,"verbose":false}`, false},
	} {
		var resp map[string]any
		verbose.post(tc.path, tc.body, 200, &resp)
		if _, ok := resp["__verbose"]; ok != tc.verbose {
			t.Errorf("--verbose, %s %s: __verbose %v", tc.path, tc.body, resp["__verbose"])
		}
	}
}

// TestPostSamplingProbs: with post_sampling_probs each generated token
// carries its probability among what the sampler chain left, and the most
// probable of those, under llama-server's names (prob, top_probs): none
// of probability 0, most probable first, summing to at most 1, the drawn
// token among them. At temperature 0 the chain leaves one token, of
// probability 1.
func TestPostSamplingProbs(t *testing.T) {
	ts := startServer(t, testConfig())
	type entry struct {
		ID       int      `json:"id"`
		Prob     *float64 `json:"prob"`
		Logprob  *float64 `json:"logprob"`
		TopProbs []struct {
			ID   int     `json:"id"`
			Prob float64 `json:"prob"`
		} `json:"top_probs"`
	}
	var resp struct {
		Probs []entry `json:"completion_probabilities"`
	}
	ts.post("/completion", `{"prompt":"Today was the day. Today I would finally become a","n_probs":10,"temperature":1,"n_predict":5,"seed":7,"post_sampling_probs":true}`, 200, &resp)
	if len(resp.Probs) != 5 {
		t.Fatalf("%d entries, want 5", len(resp.Probs))
	}
	for i, e := range resp.Probs {
		if e.Prob == nil || e.Logprob != nil || *e.Prob <= 0 || *e.Prob > 1 || len(e.TopProbs) == 0 || len(e.TopProbs) > 10 {
			t.Fatalf("entry %d: %+v", i, e)
		}
		sum, found := 0.0, false
		for j, p := range e.TopProbs {
			if p.Prob <= 0 || (j > 0 && p.Prob > e.TopProbs[j-1].Prob) {
				t.Errorf("entry %d: top_probs %+v not positive and descending", i, e.TopProbs)
			}
			sum += p.Prob
			if p.ID == e.ID {
				found = p.Prob == *e.Prob
			}
		}
		if sum > 1+1e-5 || (!found && len(e.TopProbs) < 10) {
			t.Errorf("entry %d: top_probs %+v sum to %v; the drawn token %d (prob %v) found: %v", i, e.TopProbs, sum, e.ID, *e.Prob, found)
		}
	}
	ts.post("/completion", `{"prompt":"Once upon a time","n_probs":3,"temperature":0,"n_predict":3,"post_sampling_probs":true}`, 200, &resp)
	for i, e := range resp.Probs {
		if e.Prob == nil || *e.Prob != 1 || len(e.TopProbs) != 1 || e.TopProbs[0].ID != e.ID || e.TopProbs[0].Prob != 1 {
			t.Errorf("greedy entry %d: %+v", i, e)
		}
	}
}

// TestProgressTimings: with return_progress and timings_per_token every
// progress chunk carries the prompt's timings so far, all zero before its
// first batch, never going backwards.
func TestProgressTimings(t *testing.T) {
	cfg := testConfig()
	cfg.Batch, cfg.UBatch = 32, 32
	ts := startServer(t, cfg)
	code, b := ts.do(t.Context(), http.MethodPost, "/completion", `{"prompt":`+jsonString(strings.Repeat("the quick brown fox jumps over the lazy dog ", 8))+`,"n_predict":4,"stream":true,"timings_per_token":true,"return_progress":true}`)
	if code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	var progress []Timings
	for _, data := range sseEvents(t, b) {
		var c struct {
			Progress *promptProgress `json:"prompt_progress"`
			Timings  *Timings        `json:"timings"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatal(err)
		}
		if c.Progress != nil {
			if c.Timings == nil {
				t.Fatalf("progress chunk without timings: %s", data)
			}
			progress = append(progress, *c.Timings)
		}
	}
	if len(progress) < 2 {
		t.Fatalf("%d progress chunks, want several (batch of 32)", len(progress))
	}
	if first := progress[0]; first.PromptN != 0 || first.PromptMs != 0 || first.PredictedN != 0 {
		t.Errorf("first progress timings %+v, want zeros", first)
	}
	for i := 1; i < len(progress); i++ {
		if progress[i].PromptMs < progress[i-1].PromptMs || progress[i].PromptN < progress[i-1].PromptN {
			t.Errorf("timings went backwards: %+v then %+v", progress[i-1], progress[i])
		}
	}
	if last := progress[len(progress)-1]; last.PromptMs <= 0 || last.PromptN == 0 {
		t.Errorf("last progress timings %+v", last)
	}
}

// TestContextShiftServer: with --context-shift a generation that fills
// its slot goes on to n_predict and says it was truncated, as llama-server
// answers; on both slots of a group, with n_keep and n_discard taken, and
// without cells left behind. Without it the same request stops at the
// full slot.
func TestContextShiftServer(t *testing.T) {
	cfg := testConfig()
	cfg.Parallel, cfg.CtxSize, cfg.Sampling.Temp = 2, 512, 0
	prompt := jsonString(strings.Repeat("Tom had a red ball. He liked to play with it in the park. ", 9)) // about 200 tokens
	type answer struct {
		Content   string `json:"content"`
		Truncated bool   `json:"truncated"`
		Timings   struct {
			PredictedN int `json:"predicted_n"`
		} `json:"timings"`
	}
	var plain answer
	startServer(t, cfg).post("/completion", `{"prompt":`+prompt+`,"n_predict":120}`, 200, &plain)
	if !plain.Truncated || plain.Timings.PredictedN >= 120 {
		t.Fatalf("without a context shift: %d tokens, truncated %v; want fewer than 120, truncated", plain.Timings.PredictedN, plain.Truncated)
	}
	cfg.ContextShift = true
	ts := startServer(t, cfg)
	for _, body := range []string{
		`{"prompt":` + prompt + `,"n_predict":120}`,
		`{"prompt":` + prompt + `,"n_predict":120,"n_keep":-1}`,
		`{"prompt":` + prompt + `,"n_predict":200,"n_keep":8,"n_discard":16,"id_slot":1}`,
	} {
		var a answer
		ts.post("/completion", body, 200, &a)
		var want struct {
			NPredict int `json:"n_predict"`
		}
		json.Unmarshal([]byte(body), &want)
		if !a.Truncated || a.Timings.PredictedN != want.NPredict {
			t.Errorf("%s: %d tokens, truncated %v; want %d, truncated", body, a.Timings.PredictedN, a.Truncated, want.NPredict)
		}
		if !strings.HasPrefix(a.Content, plain.Content) {
			t.Errorf("%s: the answer does not begin with the one generated before the slot filled", body)
		}
	}
	checkNoLeakedCells(t, ts.srv)
}

// TestGrammar: a GBNF grammar constrains every generated token, through
// libllama's grammar sampler, sampled or greedy, with the penalties on
// (the prompt's tokens, which they count, must not advance the grammar),
// on /completion and on chat.
func TestGrammar(t *testing.T) {
	ts := startServer(t, testConfig())
	for _, c := range []struct{ path, body, want string }{
		{"/completion", `{"prompt":"Once upon a time","n_predict":6,"grammar":"root ::= \"a\"{5,5}"}`, "^a{5}$"},
		{"/completion", `{"prompt":"Once upon a time","n_predict":16,"temperature":0,"repeat_penalty":1.2,"grammar":"root ::= (\"yes\" | \"no\") \" \" [0-9]+"}`, "^(yes|no) [0-9]+$"},
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":6,"grammar":"root ::= \"b\"{3,3}"}`, "^b{3}$"},
	} {
		var resp struct {
			Content string `json:"content"`
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
			} `json:"choices"`
		}
		ts.post(c.path, c.body, 200, &resp)
		got := resp.Content
		if len(resp.Choices) > 0 {
			got = resp.Choices[0].Message.Content
		}
		if !regexp.MustCompile(c.want).MatchString(got) {
			t.Errorf("%s %s: %q does not match %s", c.path, c.body, got, c.want)
		}
	}
	// --grammar: every request's default, which a request's grammar
	// replaces; one that does not parse stops the start.
	cfg := testConfig()
	cfg.Sampling.Grammar = `root ::= "c"{2,2}`
	def := startServer(t, cfg)
	var a, b struct {
		Content string `json:"content"`
	}
	def.post("/completion", `{"prompt":"Once","n_predict":4}`, 200, &a)
	def.post("/completion", `{"prompt":"Once","n_predict":4,"grammar":"root ::= \"d\""}`, 200, &b)
	if a.Content != "cc" || b.Content != "d" {
		t.Errorf("default grammar: %q, overridden: %q", a.Content, b.Content)
	}
	cfg.Sampling.Grammar = "root ::= ("
	srv, err := New(cfg, testenv.Logger())
	if err == nil {
		err = srv.Start(loadModel(t))
		srv.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "--grammar") {
		t.Errorf("a default grammar that does not parse: %v", err)
	}
}

// TestSamplers: llama-server's other samplers run in libllama's chain and
// act: seen through post_sampling_probs (what the chain leaves of the
// vocabulary for the first token), typical-p, top-n-sigma and a chain of
// the temperature alone change the candidates the default chain leaves,
// XTC removes the most likely one, Mirostat draws, and DRY changes a
// greedy answer to a repetitive prompt.
func TestSamplers(t *testing.T) {
	ts := startServer(t, testConfig())
	const prompt = `"prompt":"Once upon a time, there was a","n_predict":1,"n_probs":100,"post_sampling_probs":true,"temperature":1,"seed":3`
	candidates := func(extra string) []int {
		var resp struct {
			Probs []struct {
				Top []struct {
					ID int `json:"id"`
				} `json:"top_probs"`
			} `json:"completion_probabilities"`
		}
		ts.post("/completion", `{`+prompt+extra+`}`, 200, &resp)
		var ids []int
		for _, p := range resp.Probs[0].Top {
			ids = append(ids, p.ID)
		}
		return ids
	}
	def, all := candidates(""), candidates(`,"samplers":["temperature"]`)
	if len(def) < 3 || len(all) <= len(def) {
		t.Fatalf("the default chain leaves %d candidates, the temperature alone %d; the prompt should leave several, and more without top-k, top-p and min-p", len(def), len(all))
	}
	if got := candidates(`,"samplers":"t"`); len(got) != len(all) {
		t.Errorf(`"samplers":"t" leaves %d candidates, ["temperature"] %d`, len(got), len(all))
	}
	// Each sampler alone, before the temperature, leaves fewer than the
	// temperature alone; XTC drops the most likely.
	for _, extra := range []string{
		`,"typical_p":0.2,"samplers":["typ_p","temperature"]`,
		`,"top_n_sigma":0.5,"samplers":["top_n_sigma","temperature"]`,
		`,"top_k":5,"samplers":["top_k","temperature"]`,
	} {
		if got := candidates(extra); len(got) >= len(all) {
			t.Errorf("%s: %d candidates, the temperature alone %d", extra, len(got), len(all))
		}
	}
	if got := candidates(`,"xtc_probability":1,"xtc_threshold":0.01`); len(got) == 0 || got[0] == def[0] {
		t.Errorf("XTC: candidates %v, the default chain's %v", got, def)
	}
	var miro struct {
		TokensPredicted int `json:"tokens_predicted"`
	}
	ts.post("/completion", `{"prompt":"Once upon a time","n_predict":8,"mirostat":2,"seed":1}`, 200, &miro)
	if miro.TokensPredicted != 8 {
		t.Errorf("mirostat 2: %d tokens", miro.TokensPredicted)
	}
	repetitive := jsonString(strings.Repeat("Tom had a red ball. ", 8))
	var plain, dry struct {
		Content string `json:"content"`
	}
	ts.post("/completion", `{"prompt":`+repetitive+`,"n_predict":24,"temperature":0}`, 200, &plain)
	ts.post("/completion", `{"prompt":`+repetitive+`,"n_predict":24,"temperature":0,"dry_multiplier":4,"dry_allowed_length":1}`, 200, &dry)
	if plain.Content == dry.Content {
		t.Errorf("DRY changed nothing: %q", dry.Content)
	}
}

// TestLoraAdapters: no adapter is loaded, as /lora-adapters says, and
// setting none succeeds (a set naming one is refused, TestBadRequests).
func TestLoraAdapters(t *testing.T) {
	ts := startServer(t, testConfig())
	if b := ts.get("/lora-adapters", 200, nil); strings.TrimSpace(string(b)) != "[]" {
		t.Errorf("GET /lora-adapters: %s", b)
	}
	var ok map[string]bool
	ts.post("/lora-adapters", `[]`, 200, &ok)
	if !ok["success"] {
		t.Errorf("POST /lora-adapters []: %v", ok)
	}
}

// TestStreamedSeveral: several prompts, or OpenAI's n choices, stream as
// llama-server streams them: each answer's chunks carry its index, the
// answers interleave, a chat choice starts with its own role chunk, and
// one [DONE] ends an OpenAI stream. Each index's text equals the
// answer the same request gets whole (temperature 0).
func TestStreamedSeveral(t *testing.T) {
	cfg := testConfig()
	cfg.Parallel, cfg.Sampling.Temp = 2, 0
	ts := startServer(t, cfg)
	var whole []struct{ Content string }
	ts.post("/completion", `{"prompt":["Once upon a time","Tom had a red ball"],"n_predict":8}`, 200, &whole)
	var chat struct {
		Choices []struct {
			Message struct{ Content string }
		}
	}
	ts.post("/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":6,"n":2}`, 200, &chat)
	for _, c := range []struct {
		path, body string
		want       []string
		done       bool
	}{
		{"/completion", `{"prompt":["Once upon a time","Tom had a red ball"],"n_predict":8,"stream":true}`, []string{whole[0].Content, whole[1].Content}, false},
		{"/v1/completions", `{"prompt":["Once upon a time","Tom had a red ball"],"max_tokens":8,"stream":true}`, []string{whole[0].Content, whole[1].Content}, true},
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":6,"n":2,"stream":true}`, []string{chat.Choices[0].Message.Content, chat.Choices[1].Message.Content}, true},
	} {
		code, b := ts.do(t.Context(), http.MethodPost, c.path, c.body)
		if code != 200 {
			t.Fatalf("%s: %d %s", c.path, code, b)
		}
		got := make([]string, len(c.want))
		roles, dones := map[int]int{}, 0
		for _, data := range sseEvents(t, b) {
			if data == "[DONE]" {
				dones++
				continue
			}
			var chunk struct {
				Index   *int
				Content string
				Choices []struct {
					Index int
					Text  string
					Delta struct {
						Role    string
						Content *string
					}
				}
			}
			if err := json.Unmarshal([]byte(data), &chunk); err != nil {
				t.Fatalf("%s: chunk %s: %v", c.path, data, err)
			}
			switch {
			case chunk.Index != nil:
				got[*chunk.Index] += chunk.Content
			case len(chunk.Choices) == 1:
				ch := chunk.Choices[0]
				got[ch.Index] += ch.Text
				if ch.Delta.Content != nil {
					got[ch.Index] += *ch.Delta.Content
				}
				if ch.Delta.Role != "" {
					roles[ch.Index]++
				}
			}
		}
		for i := range got {
			if got[i] != c.want[i] || got[i] == "" {
				t.Errorf("%s: answer %d streamed %q, whole %q", c.path, i, got[i], c.want[i])
			}
		}
		if c.done != (dones == 1) || (c.path == "/v1/chat/completions" && (roles[0] != 1 || roles[1] != 1)) {
			t.Errorf("%s: %d [DONE], role chunks %v", c.path, dones, roles)
		}
	}
}

// TestJinjaChat: with --jinja, chats are rendered by the Jinja template
// (--chat-template's text here): /apply-template and the chat endpoint
// use it, add_generation_prompt false leaves the assistant's opening out,
// a system message the template does not render is merged into the next
// one (as llama.cpp's chat layer does), and a template's raise_exception
// refuses the conversation with a 400.
func TestJinjaChat(t *testing.T) {
	cfg := testConfig()
	cfg.Jinja = true
	cfg.ChatTemplate = `{%- for m in messages -%}{%- if m.role == 'system' -%}{{- raise_exception('no system role') -}}{%- endif -%}` +
		`{%- if m.role == 'tool' -%}{{- raise_exception('no tools here') -}}{%- endif -%}` +
		`[{{ m.role }}]{{ m.content }}{%- endfor -%}{%- if add_generation_prompt -%}[assistant]{%- endif -%}`
	ts := startServer(t, cfg)
	var p struct{ Prompt string }
	ts.post("/apply-template", `{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}]}`, 200, &p)
	if p.Prompt != "[user]Be brief.\nhi[assistant]" {
		t.Errorf("prompt %q", p.Prompt)
	}
	ts.post("/apply-template", `{"messages":[{"role":"user","content":"hi"}],"add_generation_prompt":false}`, 200, &p)
	if p.Prompt != "[user]hi" {
		t.Errorf("without the generation prompt: %q", p.Prompt)
	}
	var chat struct {
		Choices []struct {
			Message struct{ Content string }
		}
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		}
	}
	ts.post("/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`, 200, &chat)
	want, _ := ts.model.Vocab().Tokenize("[user]hi[assistant]", true, true)
	if chat.Usage.PromptTokens != len(want) {
		t.Errorf("the chat's prompt has %d tokens, the Jinja rendering %d", chat.Usage.PromptTokens, len(want))
	}
	code, b := ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"},{"role":"tool","content":"x"}]}`)
	wantError(t, code, b, 400, typeInvalidRequest, "no tools here")
}

// TestJinjaContinuation: a final assistant message is continued (the
// prompt ends inside it, its text parts joined by blank lines), unless
// --no-prefill-assistant; continue_final_message asks for it explicitly
// and conflicts with add_generation_prompt; chat_template_kwargs and
// --chat-template-kwargs reach the template, and need --jinja.
func TestJinjaContinuation(t *testing.T) {
	cfg := testConfig()
	cfg.Jinja = true
	cfg.TemplateKwargs = map[string]any{"enable_thinking": false, "who": "server"}
	cfg.ChatTemplate = `{%- if tools -%}<tools:{{ tools[0].function.name }}>{%- endif -%}` +
		`{%- for m in messages -%}[{{ m.role }}]{{ m.content }}[/]{%- endfor -%}` +
		`{%- if add_generation_prompt -%}[assistant]{%- if not enable_thinking -%}<nothink>{%- endif -%}{%- endif -%}({{ who }})`
	ts := startServer(t, cfg)
	var p struct{ Prompt string }
	ts.post("/apply-template", `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"text","text":"Wh"},{"type":"text","text":"ill"}]}]}`, 200, &p)
	if p.Prompt != "[user]hi[/][assistant]<nothink>(server)Wh\n\nill" {
		t.Errorf("prefilled: %q", p.Prompt)
	}
	ts.post("/apply-template", `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Wh"}],"add_generation_prompt":false,"continue_final_message":true,"chat_template_kwargs":{"who":"request","enable_thinking":true}}`, 200, &p)
	if p.Prompt != "[user]hi[/][assistant](request)Wh" {
		t.Errorf("continued, with the request's kwargs: %q", p.Prompt)
	}
	code, b := ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"continue_final_message":true}`)
	wantError(t, code, b, 400, typeInvalidRequest, "Cannot set both add_generation_prompt and continue_final_message")
	// Tools are rendered by /apply-template; a chat with tools is refused
	// until tool calls are parsed.
	const tools = `"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]`
	ts.post("/apply-template", `{"messages":[{"role":"user","content":"hi"}],`+tools+`}`, 200, &p)
	if !strings.HasPrefix(p.Prompt, "<tools:get_weather>[user]hi") {
		t.Errorf("with tools: %q", p.Prompt)
	}
	code, b = ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],`+tools+`}`)
	wantError(t, code, b, 400, typeInvalidRequest, "tool")

	cfg.NoPrefillAssistant = true
	ts = startServer(t, cfg)
	ts.post("/apply-template", `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Wh"}]}`, 200, &p)
	if p.Prompt != "[user]hi[/][assistant]Wh[/][assistant]<nothink>(server)" {
		t.Errorf("not prefilled: %q", p.Prompt)
	}

	cfg = testConfig() // built-in templates
	ts = startServer(t, cfg)
	code, b = ts.do(t.Context(), http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"chat_template_kwargs":{"enable_thinking":false}}`)
	wantError(t, code, b, 400, typeInvalidRequest, "--jinja")

	cfg.Jinja, cfg.ChatTemplate = true, "This is not a chat template, it is"
	ts = startServer(t, cfg)
	ts.post("/apply-template", `{"messages":[{"role":"user","content":"hi"}]}`, 200, &p)
	if p.Prompt != cfg.ChatTemplate {
		t.Errorf("a template of plain text: %q", p.Prompt)
	}
}
