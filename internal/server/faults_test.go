package server

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// smallBuffers is a listener whose connections have small socket send
// buffers, so that a client that stops reading blocks the server's writes
// after a few kilobytes, not megabytes.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096)
	}
	return c, err
}

// stalledStream opens a streamed request that would generate until its
// slot's context is full, reads its first chunk, and then never reads
// again. Closing the returned connection ends it.
func stalledStream(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).SetReadBuffer(4096)
	body := `{"prompt":"Once upon a time","n_predict":-1,"ignore_eos":true,"stream":true}`
	fmt.Fprintf(c, "POST /completion HTTP/1.1\r\nHost: kvtrim\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReaderSize(c, 16)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stalled stream: %v", err)
		}
		if strings.HasPrefix(line, "data: ") {
			return c
		}
	}
}

// TestStalledReadersLoseTheirSlots: four clients that stop reading their
// streams hold all four slots; with a write timeout of 5 s each loses its
// slot once a write has waited that long, so a good request is served
// within the timeout plus a few seconds, and no slot or goroutine leaks.
func TestStalledReadersLoseTheirSlots(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the write timeout")
	}
	cfg := testConfig()
	cfg.Parallel = 4
	cfg.CtxSize = 4 * 16384 // generations far longer than the test
	cfg.WriteTimeout = 5 * time.Second
	ts := startServerOn(t, cfg, "stories260K.gguf", func(l net.Listener) net.Listener { return smallBuffers{l} })
	addr := strings.TrimPrefix(ts.http.URL, "http://")
	for range cfg.Parallel {
		c := stalledStream(t, addr)
		defer c.Close()
	}
	var slots []struct {
		IsProcessing bool `json:"is_processing"`
	}
	ts.get("/slots", 200, &slots)
	for i, s := range slots {
		if !s.IsProcessing {
			t.Fatalf("slot %d is free: the stalled streams should hold all %d", i, cfg.Parallel)
		}
	}
	start := time.Now()
	var got completion
	ts.post("/completion", `{"prompt":"Once upon a time","n_predict":8,"temperature":0}`, 200, &got)
	took := time.Since(start)
	t.Logf("a good request behind %d stalled streams answered after %v (write timeout %v)", cfg.Parallel, took.Round(time.Millisecond), cfg.WriteTimeout)
	if limit := cfg.WriteTimeout + 5*time.Second; took > limit {
		t.Errorf("answered after %v, want within %v", took, limit)
	}
	if got.TokensPredicted != 8 {
		t.Errorf("predicted %d tokens, want 8", got.TokensPredicted)
	}
}

// TestHugePromptRefusedEarly: a prompt far longer than a slot can take is
// refused from a prefix of it, without tokenizing the whole of it.
func TestHugePromptRefusedEarly(t *testing.T) {
	ts := startServer(t, testConfig())
	prompt := strings.Repeat("Once upon a time, there was a little dog. ", 200000) // 8.4 MB
	for _, path := range []string{"/completion", "/v1/completions"} {
		code, b := ts.do(t.Context(), http.MethodPost, path, `{"prompt":`+jsonString(prompt)+`,"n_predict":4}`)
		wantError(t, code, b, 400, typeExceedContext, "exceeds the 1024 tokens a slot can take: the prompt's first")
	}
	// A prompt just over the limit is counted whole.
	near := strings.Repeat("dog ", 1100)
	toks, err := ts.model.Vocab().Tokenize(near, true, true)
	if err != nil {
		t.Fatal(err)
	}
	code, b := ts.do(t.Context(), http.MethodPost, "/completion", `{"prompt":`+jsonString(near)+`,"n_predict":4}`)
	wantError(t, code, b, 400, typeExceedContext, fmt.Sprintf("request (%d tokens) exceeds the available context size (1024 tokens)", len(toks)))
}
