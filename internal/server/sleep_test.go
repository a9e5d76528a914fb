package server

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/internal/testenv"
)

// TestSleepMode: with SleepIdle the server frees the model once idle
// (/props says is_sleeping), while /health, /props, /v1/models and
// /metrics keep answering without waking it (/metrics as it did before it
// slept, its throughput window reported once); the next request that needs
// the model loads it again and answers as before. Close frees a sleeping
// server too, leaving no goroutine behind.
func TestSleepMode(t *testing.T) {
	lib := testenv.Library(t)
	var loads atomic.Int32
	load := func() (*kvtrim.Model, error) {
		loads.Add(1)
		return kvtrim.LoadModel(lib, testenv.ModelPath(t, "stories260K.gguf"), kvtrim.ModelOptions{}, testenv.Logger())
	}
	before := runtime.NumGoroutine()
	t.Cleanup(func() { checkNoLeakedGoroutines(t, before) })
	cfg := testConfig()
	cfg.SleepIdle = 300 * time.Millisecond
	srv, err := New(cfg, testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Run(load); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(hs.Close)
	ts := &testServer{t: t, srv: srv, http: hs}

	const req = `{"prompt":"Once upon a time","n_predict":12,"temperature":0}`
	var first struct {
		Content string `json:"content"`
	}
	ts.post("/completion", req, 200, &first)
	ts.get("/metrics", 200, nil) // empties the throughput window...
	awake := ts.get("/metrics", 200, nil)
	if metricValue(t, awake, "llamacpp:predicted_tokens_seconds") != 0 {
		t.Fatalf("the second scrape reports throughput again:\n%s", awake)
	}
	sleeping := func() bool {
		var props struct {
			IsSleeping bool `json:"is_sleeping"`
		}
		ts.get("/props", 200, &props)
		return props.IsSleeping
	}
	deadline := time.Now().Add(10 * time.Second)
	for !sleeping() {
		if time.Now().After(deadline) {
			t.Fatal("the server did not go to sleep")
		}
		time.Sleep(50 * time.Millisecond)
	}
	srv.sleep.mu.RLock()
	held := srv.eng.Load() != nil || srv.owned != nil
	srv.sleep.mu.RUnlock()
	if held {
		t.Fatal("asleep, but the engine or the model is still held")
	}
	ts.get("/health", 200, nil)
	var models struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	ts.get("/v1/models", 200, &models)
	if len(models.Data) != 1 || models.Data[0].ID == "" {
		t.Errorf("/v1/models while asleep: %+v", models)
	}
	if asleep := ts.get("/metrics", 200, nil); !bytes.Equal(asleep, awake) {
		t.Errorf("/metrics while asleep differs from before:\n%s\nwant\n%s", asleep, awake)
	}
	if !sleeping() || loads.Load() != 1 {
		t.Fatalf("the endpoints that stay up woke the server (loads %d)", loads.Load())
	}

	var again struct {
		Content string `json:"content"`
	}
	ts.post("/completion", req, 200, &again)
	if again.Content != first.Content || loads.Load() != 2 || sleeping() {
		t.Errorf("after waking: %q (want %q), %d loads, asleep %v", again.Content, first.Content, loads.Load(), sleeping())
	}
	// It sleeps again, and closes asleep.
	for !sleeping() {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatal("the server did not go to sleep again")
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, _ := ts.do(t.Context(), http.MethodPost, "/tokenize", `{"content":"Hello"}`)
	if code != 200 || sleeping() || loads.Load() != 3 {
		t.Errorf("/tokenize: %d, asleep %v, %d loads: want it to wake the server", code, sleeping(), loads.Load())
	}
}
