package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvtrim/kvtrim"
)

// waitIdle waits until no slot is busy.
func waitIdle(t *testing.T, ts *testServer) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var slots []struct {
			IsProcessing bool `json:"is_processing"`
		}
		ts.get("/slots", 200, &slots)
		if !slices.ContainsFunc(slots, func(s struct {
			IsProcessing bool `json:"is_processing"`
		}) bool {
			return s.IsProcessing
		}) {
			return
		}
	}
	t.Fatal("a slot is still busy after 10s")
}

// longStream starts a streamed request that would generate until the
// slot's context is full and returns once its first chunk arrived.
func longStream(t *testing.T, ts *testServer) (context.CancelFunc, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.http.URL+"/completion",
		strings.NewReader(`{"prompt":"Once upon a time","n_predict":-1,"ignore_eos":true,"stream":true}`))
	resp, err := ts.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first chunk %q: %v", line, err)
	}
	return cancel, resp
}

// TestDisconnectFreesSlot: a client that goes away mid-stream cancels its
// generation and frees its slot, with one slot (a context of its own) and
// with two (a group's members); the next request is served, the cancelled
// one is not counted as finished, and no goroutine is left.
func TestDisconnectFreesSlot(t *testing.T) {
	for _, parallel := range []int{1, 2} {
		t.Run(fmt.Sprintf("np%d", parallel), func(t *testing.T) {
			cfg := testConfig()
			cfg.Parallel = parallel
			cfg.CtxSize = 16384 * parallel // a generation long enough to be cut
			testDisconnect(t, cfg)
		})
	}
}

func testDisconnect(t *testing.T, cfg Config) {
	ts := startServer(t, cfg)
	ts.post("/completion", `{"prompt":"Once","n_predict":2}`, 200, nil) // warm up the client's connection pool
	ts.http.Client().CloseIdleConnections()
	before := runtime.NumGoroutine()

	cancel, resp := longStream(t, ts)
	cancel()
	resp.Body.Close()
	waitIdle(t, ts)
	var got completion
	ts.post("/completion", `{"prompt":"Once upon a time","n_predict":8,"temperature":0}`, 200, &got)
	if got.TokensPredicted != 8 {
		t.Errorf("after a disconnect: %+v", got)
	}
	metrics := string(ts.get("/metrics", 200, nil))
	if !strings.Contains(metrics, "llamacpp:tokens_predicted_total 10\n") {
		t.Errorf("the cancelled request was counted as finished:\n%s", metrics)
	}
	ts.http.Client().CloseIdleConnections()
	var now int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if now = runtime.NumGoroutine(); now <= before {
			return
		}
	}
	buf := make([]byte, 1<<20)
	t.Errorf("goroutines: %d before, %d after\n%s", before, now, buf[:runtime.Stack(buf, true)])
}

// TestQueueFull: with --queue 1, a request past the one waiting is
// answered 503 with Retry-After, and the waiting one is served once the
// slot is free.
func TestQueueFull(t *testing.T) {
	cfg := testConfig()
	cfg.CtxSize, cfg.QueueSize = 16384, 1
	ts := startServer(t, cfg)
	cancel, resp := longStream(t, ts) // holds the one slot
	defer resp.Body.Close()
	defer cancel()
	queued := make(chan int)
	go func() {
		code, _ := ts.do(context.Background(), "POST", "/completion", `{"prompt":"Once","n_predict":2}`)
		queued <- code
	}()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if strings.Contains(string(ts.get("/metrics", 200, nil)), "llamacpp:requests_deferred 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second request never queued")
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", ts.http.URL+"/completion", strings.NewReader(`{"prompt":"Once","n_predict":2}`))
	full, err := ts.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(full.Body)
	full.Body.Close()
	wantError(t, full.StatusCode, body, 503, typeUnavailable, "busy")
	if s, err := strconv.Atoi(full.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("Retry-After %q: want a number of seconds >= 1", full.Header.Get("Retry-After"))
	}
	cancel()
	if code := <-queued; code != 200 {
		t.Errorf("the queued request got %d after the slot was freed", code)
	}
}

// TestQueueUnbounded: by default every request waits for a slot, as in
// llama-server: 12 requests behind a busy slot all wait, and all get
// their answer once it is free.
func TestQueueUnbounded(t *testing.T) {
	cfg := testConfig()
	cfg.CtxSize = 16384
	ts := startServer(t, cfg)
	cancel, resp := longStream(t, ts) // holds the one slot
	defer resp.Body.Close()
	defer cancel()
	codes := make(chan int, 12)
	for range cap(codes) {
		go func() {
			code, _ := ts.do(context.Background(), "POST", "/completion", `{"prompt":"Once upon a time","n_predict":4}`)
			codes <- code
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if strings.Contains(string(ts.get("/metrics", 200, nil)), fmt.Sprintf("llamacpp:requests_deferred %d\n", cap(codes))) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %d requests never all waited:\n%s", cap(codes), ts.get("/metrics", 200, nil))
		}
	}
	cancel()
	for range cap(codes) {
		if code := <-codes; code != 200 {
			t.Errorf("status %d, want every request served", code)
		}
	}
}

// loadAnswer is what the load test reads of an answer, streamed or not:
// the tokens and, for each, its two most likely tokens' log-probabilities.
type loadAnswer struct {
	tokens []kvtrim.Token
	top2   [][2]float64
}

// readLoadAnswer parses a /completion answer with return_tokens and
// n_probs 2, whole or streamed.
func readLoadAnswer(body []byte, stream bool) (loadAnswer, error) {
	var a loadAnswer
	chunks := [][]byte{body}
	if stream {
		chunks = chunks[:0]
		for block := range bytes.SplitSeq(body, []byte("\n\n")) {
			if data, ok := bytes.CutPrefix(bytes.TrimSpace(block), []byte("data: ")); ok {
				chunks = append(chunks, data)
			}
		}
	}
	for _, c := range chunks {
		var r struct {
			Tokens []kvtrim.Token `json:"tokens"`
			Probs  []tokenProb    `json:"completion_probabilities"`
		}
		if err := json.Unmarshal(c, &r); err != nil {
			return a, fmt.Errorf("%w: %s", err, c)
		}
		if stream && len(r.Probs) == 0 {
			continue // the last chunk repeats nothing but the stats
		}
		a.tokens = append(a.tokens, r.Tokens...)
		for _, p := range r.Probs {
			if len(p.Top) < 2 {
				return a, fmt.Errorf("token %d: %d top log-probabilities, want 2", p.ID, len(p.Top))
			}
			a.top2 = append(a.top2, [2]float64{p.Top[0].Logprob, p.Top[1].Logprob})
		}
	}
	if len(a.top2) != len(a.tokens) {
		return a, fmt.Errorf("%d tokens but %d probabilities", len(a.tokens), len(a.top2))
	}
	return a, nil
}

// nearTie is the log-probability margin under which two tokens count as
// tied: batched and lone decodes may round differently, so the load test
// allows an answer to part from the lone one only at such a tie.
const nearTie = 1e-3

// divergence compares an answer with the lone one: -1 when they are
// equal, else the first token where they part, and whether either had a
// near-tie there.
func divergence(got, alone loadAnswer) (at int, tie bool) {
	n := min(len(got.tokens), len(alone.tokens))
	at = 0
	for at < n && got.tokens[at] == alone.tokens[at] {
		at++
	}
	if at == n && len(got.tokens) == len(alone.tokens) {
		return -1, false
	}
	for _, a := range []loadAnswer{got, alone} {
		if at < len(a.top2) && a.top2[at][0]-a.top2[at][1] < nearTie {
			return at, true
		}
	}
	return at, false
}

// TestLoadAnswersEqualAlone: 32 clients send 10 requests each to 4 slots
// at once, streamed and not, prompts of 4 to 420 tokens, with the full
// cache and with SnapKV; every answer at temperature 0 equals the same
// request sent alone, but at a near-tie (the top two log-probabilities
// within 1e-3, which is reported), and nothing gets a 5xx.
func TestLoadAnswersEqualAlone(t *testing.T) {
	if testing.Short() {
		t.Skip("320 requests")
	}
	cfg := testConfig()
	cfg.Parallel = 4
	cfg.CtxSize = 4 * 1024
	ts := startServer(t, cfg)
	long := story(t)
	type request struct {
		body   string
		stream bool
	}
	var requests []request
	prompts := []string{"Once upon a time", "The little dog", "Lily and Tom went", "One day, a bird", long[:len(long)/3], long}
	for i, p := range prompts {
		for _, snap := range []bool{false, true} {
			if snap && len(p) < 200 {
				continue // too short to compress
			}
			kv := ""
			if snap {
				kv = `,"kvtrim":{"policy":"snapkv","budget":48,"window":8}`
			}
			for _, stream := range []bool{false, true} {
				requests = append(requests, request{fmt.Sprintf(`{"prompt":%s,"n_predict":%d,"temperature":0,"ignore_eos":true,"return_tokens":true,"n_probs":2,"stream":%v%s}`,
					jsonString(p), 16+8*(i%3), stream, kv), stream})
			}
		}
	}
	alone := make([]loadAnswer, len(requests))
	for i, r := range requests {
		code, b := ts.do(context.Background(), "POST", "/completion", r.body)
		a, err := readLoadAnswer(b, r.stream)
		if code != 200 || err != nil || len(a.tokens) == 0 {
			t.Fatalf("%s alone: %d %v %s", r.body[:60], code, err, b)
		}
		alone[i] = a
	}
	const clients, each = 32, 10
	var wg sync.WaitGroup
	var mu sync.Mutex
	ties := 0
	for client := range clients {
		wg.Go(func() {
			for k := range each {
				i := (client*each + k) % len(requests)
				r := requests[i]
				code, b := ts.do(context.Background(), "POST", "/completion", r.body)
				if code != 200 {
					t.Errorf("client %d request %d: status %d: %s", client, k, code, b)
					continue
				}
				got, err := readLoadAnswer(b, r.stream)
				if err != nil {
					t.Errorf("client %d request %d: %v", client, k, err)
					continue
				}
				switch at, tie := divergence(got, alone[i]); {
				case at < 0:
				case tie:
					mu.Lock()
					ties++
					mu.Unlock()
					t.Logf("near-tie: client %d request %d (%.40s) parts from the lone answer at token %d", client, k, r.body, at)
				default:
					t.Errorf("client %d request %d (%.60s) parts from the lone answer at token %d:\n got   %v\n alone %v", client, k, r.body, at, got.tokens, alone[i].tokens)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d requests from %d clients, %d kinds; %d parted from the lone answer at a near-tie", clients*each, clients, len(requests), ties)
}

// TestSlotsDecodeTogether: four requests generating at once on four slots
// share their llama_decode calls (continuous batching): the calls carry
// well over one sequence each on average, and each answer equals the
// request sent alone.
func TestSlotsDecodeTogether(t *testing.T) {
	cfg := testConfig()
	cfg.Parallel = 4
	ts := startServer(t, cfg)
	prompts := []string{"Once upon a time", "The little dog", "Lily and Tom went", "One day, a bird"}
	body := func(p string) string {
		return fmt.Sprintf(`{"prompt":%s,"n_predict":200,"temperature":0,"ignore_eos":true}`, jsonString(p))
	}
	want := make([]string, len(prompts))
	for i, p := range prompts {
		var c completion
		ts.post("/completion", body(p), 200, &c)
		want[i] = c.Content
	}
	calls0 := metricValue(t, ts.get("/metrics", 200, nil), "kvtrim_decode_calls_total")
	seqs0 := metricValue(t, ts.get("/metrics", 200, nil), "kvtrim_decode_sequences_total")
	got := make([]string, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Go(func() {
			var c completion
			ts.post("/completion", body(p), 200, &c)
			got[i] = c.Content
		})
	}
	wg.Wait()
	for i := range prompts {
		if got[i] != want[i] {
			t.Errorf("%q together: %q, alone %q", prompts[i], got[i], want[i])
		}
	}
	b := ts.get("/metrics", 200, nil)
	calls := metricValue(t, b, "kvtrim_decode_calls_total") - calls0
	seqs := metricValue(t, b, "kvtrim_decode_sequences_total") - seqs0
	t.Logf("%g llama_decode calls carried %g sequences' steps (%.2f each)", calls, seqs, seqs/calls)
	if calls == 0 || seqs/calls < 2 {
		t.Errorf("%g llama_decode calls carried %g steps: the slots were not batched", calls, seqs)
	}
}

// TestCompressedPrefillsInSlots: on a server whose default is SnapKV, four
// prompts longer than a slot arrive at once; each is prefilled in chunks
// in its own slot's stream (no context besides the slots', so n_ctx_peak
// is the slot's), the chunks of several slots share llama_decode calls,
// and each answer equals the same request sent alone (but at a near-tie).
func TestCompressedPrefillsInSlots(t *testing.T) {
	cfg := testConfig()
	cfg.Parallel, cfg.CtxSize = 4, 4*256
	cfg.Compression = kvtrim.Compression{Policy: kvtrim.PolicySnapKV, Budget: 64}
	ts := startServer(t, cfg)
	long := story(t)
	prompts := make([]string, 4)
	for i := range prompts {
		prompts[i] = long[i*30:] // four prompts of over 256 tokens
	}
	body := func(p string) string {
		return fmt.Sprintf(`{"prompt":%s,"n_predict":8,"temperature":0,"ignore_eos":true,"return_tokens":true,"n_probs":2}`, jsonString(p))
	}
	alone := make([]loadAnswer, len(prompts))
	for i, p := range prompts {
		code, b := ts.do(context.Background(), "POST", "/completion", body(p))
		a, err := readLoadAnswer(b, false)
		if code != 200 || err != nil {
			t.Fatalf("prompt %d alone: %d %v %s", i, code, err, b)
		}
		alone[i] = a
	}
	m := ts.get("/metrics", 200, nil)
	calls0, seqs0, solo0 := metricValue(t, m, "kvtrim_decode_calls_total"), metricValue(t, m, "kvtrim_decode_sequences_total"), metricValue(t, m, "kvtrim_decode_solo_calls_total")
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Go(func() {
			code, b := ts.do(context.Background(), "POST", "/completion", body(p))
			got, err := readLoadAnswer(b, false)
			var c completion
			if code != 200 || err != nil || json.Unmarshal(b, &c) != nil {
				t.Errorf("prompt %d: %d %v %s", i, code, err, b)
				return
			}
			if k := c.Kvtrim; k == nil || k.PromptTokens <= 256 || k.KeptCells != 64 || k.Chunks == 0 || k.NCtxPeak != 256 {
				t.Errorf("prompt %d: kvtrim %+v: want more than 256 prompt tokens chunked into 64 cells, in the slot's 256", i, k)
			}
			if at, tie := divergence(got, alone[i]); at >= 0 && !tie {
				t.Errorf("prompt %d parts from the lone answer at token %d:\n got   %v\n alone %v", i, at, got.tokens, alone[i].tokens)
			}
		})
	}
	wg.Wait()
	m = ts.get("/metrics", 200, nil)
	calls := metricValue(t, m, "kvtrim_decode_calls_total") - calls0
	seqs := metricValue(t, m, "kvtrim_decode_sequences_total") - seqs0
	solo := metricValue(t, m, "kvtrim_decode_solo_calls_total") - solo0
	// The calls a slot has alone (its prompt's last rows and lookahead,
	// observed) aside, the chunks and steps share calls.
	shared := (seqs - solo) / max(1, calls-solo)
	t.Logf("%g llama_decode calls carried %g sequences' requests; %g calls were a slot's alone, the others carried %.2f each", calls, seqs, solo, shared)
	if solo == 0 || shared < 1.5 {
		t.Errorf("%g llama_decode calls carried %g requests (%g alone): the slots' prefills were not batched", calls, seqs, solo)
	}
}
