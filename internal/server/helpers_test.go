package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/internal/testenv"
)

// testConfig is a small server with one thread in all: go test runs
// packages in parallel on few cores.
func testConfig() Config {
	return Config{
		Parallel: 1, CtxSize: 1024, Batch: 512, UBatch: 512, Threads: 1, FlashAttn: "auto",
		Sampling: DefaultSampling(), PromptReuse: DefaultPromptReuse(), Slots: true, Metrics: true,
	}
}

// loadModel loads the bundled tiny model with the real libllama.
func loadModel(t *testing.T) *kvtrim.Model {
	t.Helper()
	return loadModelNamed(t, "stories260K.gguf")
}

// loadModelNamed loads a model of testdata/ or ../shared/models.
func loadModelNamed(t *testing.T, name string) *kvtrim.Model {
	t.Helper()
	lib := testenv.Library(t)
	m, err := kvtrim.LoadModel(lib, testenv.ModelPath(t, name), kvtrim.ModelOptions{}, testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// testServer is a started server behind an httptest.Server.
type testServer struct {
	t     *testing.T
	srv   *Server
	http  *httptest.Server
	model *kvtrim.Model
	key   string // sent as a bearer token when set
}

func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	return startServerModel(t, cfg, "stories260K.gguf")
}

// startServerModel is startServer over another model.
func startServerModel(t *testing.T, cfg Config, name string) *testServer {
	t.Helper()
	return startServerOn(t, cfg, name, nil)
}

// startServerOn is startServerModel with the HTTP listener wrapped by wrap
// (when set).
func startServerOn(t *testing.T, cfg Config, name string, wrap func(net.Listener) net.Listener) *testServer {
	t.Helper()
	model := loadModelNamed(t, name)
	before := runtime.NumGoroutine()
	t.Cleanup(func() { checkNoLeakedGoroutines(t, before) }) // after the server has closed
	srv, err := New(cfg, testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(model); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	if wrap != nil {
		hs.Listener = wrap(hs.Listener)
	}
	hs.Start()
	// Cleanups run last-in first-out: the HTTP server, the slots, then
	// the model.
	t.Cleanup(srv.Close)
	t.Cleanup(hs.Close)
	t.Cleanup(func() { checkNoLeakedCells(t, srv) })
	return &testServer{t: t, srv: srv, http: hs, model: model}
}

// do sends a request and returns the status and body.
func (ts *testServer) do(ctx context.Context, method, path, body string) (int, []byte) {
	ts.t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, ts.http.URL+path, strings.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	if ts.key != "" {
		req.Header.Set("Authorization", "Bearer "+ts.key)
	}
	resp, err := ts.http.Client().Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		ts.t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// post sends body and decodes the JSON answer into out, wanting status.
func (ts *testServer) post(path, body string, status int, out any) {
	ts.t.Helper()
	code, b := ts.do(context.Background(), http.MethodPost, path, body)
	if code != status {
		ts.t.Fatalf("POST %s %s: status %d, want %d: %s", path, body, code, status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			ts.t.Fatalf("POST %s: decode %s: %v", path, b, err)
		}
	}
}

// get fetches path and decodes the JSON answer, wanting status.
func (ts *testServer) get(path string, status int, out any) []byte {
	ts.t.Helper()
	code, b := ts.do(context.Background(), http.MethodGet, path, "")
	if code != status {
		ts.t.Fatalf("GET %s: status %d, want %d: %s", path, code, status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			ts.t.Fatalf("GET %s: decode %s: %v", path, b, err)
		}
	}
	return b
}

// sseEvents splits an event stream into its data payloads.
func sseEvents(t *testing.T, body []byte) []string {
	t.Helper()
	var out []string
	for _, block := range bytes.Split(body, []byte("\n\n")) {
		block = bytes.TrimSpace(block)
		if len(block) == 0 {
			continue
		}
		data, ok := bytes.CutPrefix(block, []byte("data: "))
		if !ok {
			t.Fatalf("event without data: %q", block)
		}
		out = append(out, string(data))
	}
	return out
}

// apiErr is the error JSON.
type apiErr struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Type    string `json:"type"`
	} `json:"error"`
}

// wantError checks an error answer's status, type and message.
func wantError(t *testing.T, code int, body []byte, status int, typ, msgPart string) {
	t.Helper()
	if code != status {
		t.Fatalf("status %d, want %d: %s", code, status, body)
	}
	var e apiErr
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body is not JSON: %s", body)
	}
	if e.Error.Code != status || e.Error.Type != typ || !strings.Contains(e.Error.Message, msgPart) {
		t.Fatalf("error %+v, want code %d type %s message containing %q", e.Error, status, typ, msgPart)
	}
}

// direct generates greedily from prompt through a Session of the same
// shape as a slot's: the reference the server must match token for token.
func direct(t *testing.T, model *kvtrim.Model, nCtx int, prompt string, n int, comp kvtrim.Compression) ([]kvtrim.Token, string) {
	t.Helper()
	s, err := model.NewSession(kvtrim.SessionOptions{NCtx: nCtx, NBatch: 512, NUbatch: 512, Threads: 1, FlashAttn: "auto", Compression: comp})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tokens, err := s.Tokenize(prompt)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Prefill(context.Background(), tokens); err != nil {
		t.Fatal(err)
	}
	sampler := model.Library().NewSampler(bindings.SamplerOptions{Temp: 0})
	defer sampler.Close()
	var out []kvtrim.Token
	var text strings.Builder
	err = s.Generate(context.Background(), sampler, kvtrim.GenerateOptions{MaxTokens: n}, func(tok kvtrim.Token, piece string) error {
		out = append(out, tok)
		text.WriteString(piece)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, text.String()
}

// story is a 419-token prompt (the demo's).
func story(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "cmd", "kvtrim", "demo_story.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// metricValue is the value of a metric without labels in a /metrics body.
func metricValue(t *testing.T, body []byte, name string) float64 {
	t.Helper()
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("no metric %s in:\n%s", name, body)
	return 0
}

// checkNoLeakedGoroutines checks, once the test's server has closed, that
// no goroutine it started is left (allowing them a few seconds to end). A
// test runs one server at a time for this count to hold.
func checkNoLeakedGoroutines(t *testing.T, before int) {
	t.Helper()
	now := 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if now = runtime.NumGoroutine(); now <= before {
			return
		}
	}
	buf := make([]byte, 1<<20)
	t.Errorf("leaked goroutines: %d before the server started, %d after it closed\n%s", before, now, buf[:runtime.Stack(buf, true)])
}

// checkNoLeakedCells waits for the requests still running (cancelled ones
// finish at their next token) and checks that no slot's cache holds cells
// its session does not account for.
func checkNoLeakedCells(t *testing.T, srv *Server) {
	t.Helper()
	e := srv.eng.Load()
	if e == nil {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.pool.busy.Load() > 0 || e.pool.deferred() > 0 {
		if time.Now().After(deadline) {
			t.Errorf("requests still running 10 s after the test")
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := e.pool.checkCells(); err != nil {
		t.Errorf("leaked cells: %v", err)
	}
}

// streamedChat is a chat stream's deltas gathered: its content and
// reasoning, its tool calls (each as sent) and its finish reason.
type streamedChat struct {
	Content, Reasoning string
	ToolCalls          []json.RawMessage
	Finish             string
}

// readChatStream gathers a chat completion's event stream.
func readChatStream(t *testing.T, body []byte) streamedChat {
	t.Helper()
	var out streamedChat
	for _, line := range sseEvents(t, body) {
		if line == "[DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content          *string
					ReasoningContent *string           `json:"reasoning_content"`
					ToolCalls        []json.RawMessage `json:"tool_calls"`
				}
				FinishReason *string `json:"finish_reason"`
			}
		}
		if err := json.Unmarshal([]byte(line), &chunk); err != nil {
			t.Fatal(err)
		}
		for _, c := range chunk.Choices {
			if c.Delta.Content != nil {
				out.Content += *c.Delta.Content
			}
			if c.Delta.ReasoningContent != nil {
				out.Reasoning += *c.Delta.ReasoningContent
			}
			out.ToolCalls = append(out.ToolCalls, c.Delta.ToolCalls...)
			if c.FinishReason != nil {
				out.Finish = *c.FinishReason
			}
		}
	}
	return out
}
