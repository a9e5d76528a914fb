package server

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
)

// TestPrefixReuse: a second turn whose prompt starts with the first turn's
// prompt and answer decodes only its new tokens (timings.cache_n), and
// answers exactly as a new session given the whole prompt; a prompt that
// shares less keeps only the shared prefix.
func TestPrefixReuse(t *testing.T) {
	ts := startServer(t, testConfig())
	body := func(prompt string) string {
		return fmt.Sprintf(`{"prompt":%s,"n_predict":16,"temperature":0,"return_tokens":true}`, jsonString(prompt))
	}
	first := "Tom had a red ball. He liked to play with it."
	var c1 completion
	ts.post("/completion", body(first), 200, &c1)
	if c1.Timings.CacheN != 0 {
		t.Fatalf("first turn: cache_n %d", c1.Timings.CacheN)
	}
	second := first + c1.Content + " Then his friend came."
	var c2 completion
	ts.post("/completion", body(second), 200, &c2)
	if c2.Timings.CacheN < c1.TokensEvaluated || c2.Timings.CacheN+c2.Timings.PromptN != c2.TokensEvaluated {
		t.Errorf("second turn: cache_n %d, prompt_n %d of %d tokens; the first turn's prompt had %d",
			c2.Timings.CacheN, c2.Timings.PromptN, c2.TokensEvaluated, c1.TokensEvaluated)
	}
	if want, _ := direct(t, ts.model, 1024, second, 16, kvtrim.Compression{}); !slices.Equal(c2.Tokens, want) {
		t.Errorf("second turn %v, a new session %v", c2.Tokens, want)
	}
	// The stats describe the whole request, not only the tokens decoded.
	if k := c2.Kvtrim; k == nil || k.PromptTokens != c2.TokensEvaluated || k.KeptCells != c2.TokensEvaluated ||
		k.KVBytesAfter == 0 || k.KVBytesAfter != k.KVBytesBefore {
		t.Errorf("second turn's kvtrim stats %+v for %d prompt tokens", c2.Kvtrim, c2.TokensEvaluated)
	}
	var slots []struct {
		Kvtrim *KVStats `json:"kvtrim"`
	}
	ts.get("/slots", 200, &slots)
	if k := slots[0].Kvtrim; k == nil || k.PromptTokens != c2.TokensEvaluated || k.KeptCells != c2.TokensEvaluated {
		t.Errorf("/slots after the second turn: %+v", k)
	}
	var c3 completion
	ts.post("/completion", body("Tom had a blue car."), 200, &c3)
	if c3.Timings.CacheN == 0 || c3.Timings.CacheN >= c2.Timings.CacheN {
		t.Errorf("a prompt sharing only its start: cache_n %d", c3.Timings.CacheN)
	}
	if want, _ := direct(t, ts.model, 1024, "Tom had a blue car.", 16, kvtrim.Compression{}); !slices.Equal(c3.Tokens, want) {
		t.Errorf("third request %v, a new session %v", c3.Tokens, want)
	}
}

// TestPrefixReuseCompressed: with SnapKV, a turn that continues the whole
// cached conversation keeps the compressed cache and decodes only the new
// tokens; a prompt that does not continue it is compressed anew.
func TestPrefixReuseCompressed(t *testing.T) {
	ts := startServer(t, testConfig())
	story := story(t)
	const kv = `"kvtrim":{"policy":"snapkv","budget":64,"window":8}`
	var c1, c2, c3 completion
	ts.post("/completion", fmt.Sprintf(`{"prompt":%s,"n_predict":12,"temperature":0,%s}`, jsonString(story), kv), 200, &c1)
	if c1.Kvtrim == nil || c1.Kvtrim.KeptCells != 64 || c1.Timings.CacheN != 0 {
		t.Fatalf("first turn: %+v %+v", c1.Kvtrim, c1.Timings)
	}
	next := story + c1.Content + " The end."
	ts.post("/completion", fmt.Sprintf(`{"prompt":%s,"n_predict":12,"temperature":0,%s}`, jsonString(next), kv), 200, &c2)
	if c2.Timings.CacheN < c1.TokensEvaluated || c2.TokensPredicted != 12 || c2.Kvtrim.EvictedCells != 0 {
		t.Errorf("continued turn: cache_n %d (first prompt %d tokens), predicted %d, kvtrim %+v", c2.Timings.CacheN, c1.TokensEvaluated, c2.TokensPredicted, c2.Kvtrim)
	}
	// The cache holds the 64 kept cells, the first answer and the new
	// turn's tokens: fewer than the whole conversation's.
	newTokens := c2.Timings.PromptN
	if k := c2.Kvtrim; k.PromptTokens != c2.TokensEvaluated || k.KeptCells <= 64 || k.KeptCells > 64+c1.TokensPredicted+newTokens ||
		k.KVBytesAfter == 0 || k.KVBytesAfter >= k.KVBytesBefore {
		t.Errorf("continued turn's kvtrim stats %+v for %d prompt tokens (%d new)", k, c2.TokensEvaluated, newTokens)
	}
	ts.post("/completion", fmt.Sprintf(`{"prompt":%s,"n_predict":12,"temperature":0,%s}`, jsonString("The end. "+story), kv), 200, &c3)
	if c3.Timings.CacheN != 0 || c3.Kvtrim.KeptCells != 64 {
		t.Errorf("a new conversation: cache_n %d, kvtrim %+v", c3.Timings.CacheN, c3.Kvtrim)
	}
}

// TestConversationsKeepTheirSlots: with two slots, each of two
// conversations' next turn goes to the slot that holds its earlier turns
// (cache_n covers them), however the slots were used in between; id_slot
// picks a slot, and one the server lacks is refused.
func TestConversationsKeepTheirSlots(t *testing.T) {
	cfg := testConfig()
	cfg.Parallel = 2
	ts := startServer(t, cfg)
	body := func(prompt string, extra string) string {
		return fmt.Sprintf(`{"prompt":%s,"n_predict":12,"temperature":0%s}`, jsonString(prompt), extra)
	}
	convs := []string{"Tom had a red ball. He liked to play with it.", "Lily saw a big dog in the garden. The dog was sad."}
	first := make([]completion, 2)
	for i, p := range convs {
		ts.post("/completion", body(p, ""), 200, &first[i])
	}
	if first[0].IDSlot == first[1].IDSlot {
		t.Fatalf("two new conversations went to the same slot %d while the other was free", first[0].IDSlot)
	}
	// The second conversation's slot is now the most recently used: the
	// first conversation's next turn must still find its own.
	for i, p := range convs {
		var c completion
		ts.post("/completion", body(p+first[i].Content+" Then they went home.", ""), 200, &c)
		if c.IDSlot != first[i].IDSlot || c.Timings.CacheN < first[i].TokensEvaluated {
			t.Errorf("conversation %d: next turn on slot %d with cache_n %d; its first turn was on slot %d with %d prompt tokens",
				i, c.IDSlot, c.Timings.CacheN, first[i].IDSlot, first[i].TokensEvaluated)
		}
	}
	var c completion
	ts.post("/completion", body("Once upon a time", `,"id_slot":1`), 200, &c)
	if c.IDSlot != 1 {
		t.Errorf("id_slot 1: answered by slot %d", c.IDSlot)
	}
	code, b := ts.do(t.Context(), "POST", "/completion", body("Once upon a time", `,"id_slot":2`))
	wantError(t, code, b, 400, "invalid_request_error", "id_slot 2")
}

// TestSetProps: with --props, POST /props's "kvtrim" object sets the
// default compression of later requests (and GET /props shows it); bad
// values are refused and change nothing.
func TestSetProps(t *testing.T) {
	cfg := testConfig()
	cfg.Props = true
	ts := startServer(t, cfg)
	story := jsonString(story(t))
	code, b := ts.do(t.Context(), "POST", "/props", `{"kvtrim":{"policy":"snapkv","budget":3}}`)
	wantError(t, code, b, 400, "invalid_request_error", "budget")
	var c completion
	ts.post("/completion", `{"prompt":`+story+`,"n_predict":4}`, 200, &c)
	if c.Kvtrim == nil || c.Kvtrim.EvictedCells != 0 {
		t.Fatalf("before POST /props: %+v", c.Kvtrim)
	}
	ts.post("/props", `{"kvtrim":{"policy":"snapkv","budget":64,"window":8},"other":1}`, 200, nil)
	ts.post("/completion", `{"prompt":`+story+`,"n_predict":4}`, 200, &c)
	if c.Kvtrim == nil || c.Kvtrim.Policy != "snapkv" || c.Kvtrim.KeptCells != 64 {
		t.Errorf("after POST /props: %+v", c.Kvtrim)
	}
	var props struct {
		Kvtrim struct {
			Compression map[string]any `json:"compression"`
		} `json:"kvtrim"`
	}
	ts.get("/props", 200, &props)
	if props.Kvtrim.Compression["policy"] != "snapkv" {
		t.Errorf("GET /props: compression %v", props.Kvtrim.Compression)
	}
}

// TestShortPromptUnderRatio: a server whose default is SnapKV at a ratio
// answers a prompt too short to compress (its budget would not exceed the
// window) with the whole prompt kept, and says so; it does not fail it.
func TestShortPromptUnderRatio(t *testing.T) {
	cfg := testConfig()
	cfg.Compression = kvtrim.Compression{Policy: "snapkv", Ratio: 0.25, Window: 32}
	ts := startServer(t, cfg)
	var c completion
	ts.post("/completion", `{"prompt":"Tom had a red ball. He liked to play with it in the park.","n_predict":8}`, 200, &c)
	if c.Kvtrim == nil || c.Kvtrim.EvictedCells != 0 || !strings.Contains(c.Kvtrim.Note, "too short") || c.TokensPredicted != 8 {
		t.Errorf("short prompt under a ratio: %+v %+v", c.Kvtrim, c)
	}
}
