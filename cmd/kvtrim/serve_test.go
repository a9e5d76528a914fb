package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvtrim/kvtrim/internal/testenv"
)

func TestServeRefusesLlamaServerFlags(t *testing.T) {
	for _, flag := range [][]string{
		{"--lora", "a.gguf"}, {"--mmproj=m.gguf"}, {"-ctk", "q8_0"}, {"--jinja"}, {"--cont-batching"},
		{"--embedding"}, {"--reranking"}, {"--draft", "8"}, {"--rope-scaling", "yarn"}, {"--grammar-file", "g.gbnf"},
	} {
		args := append([]string{"serve", "-m", "model.gguf"}, flag...)
		r := runKvtrim(t, nil, args...)
		name := strings.SplitN(flag[0], "=", 2)[0]
		wantOneLineError(t, r, "kvtrim serve does not support llama-server's "+name)
		if r.code != exitUsage {
			t.Errorf("%v: exit %d, want %d", flag, r.code, exitUsage)
		}
	}
}

func TestServeChecksFlagsBeforeLoading(t *testing.T) {
	// The model does not exist: every error must be about the flag, found
	// before anything is loaded.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--kv-policy", "bogus"}, "unknown policy"},
		{[]string{"--kv-policy", "snapkv"}, "--budget"},
		{[]string{"--kv-policy", "snapkv", "--kv-budget", "16", "--kv-window", "32"}, "larger than the window"},
		{[]string{"--port", "70000"}, "--port 70000"},
		{[]string{"-np", "0"}, "parallel 0"},
		{[]string{"--timeout", "0"}, "--timeout 0"},
		{[]string{"--top-p", "2"}, "--top-p"},
		{[]string{"-fa", "maybe"}, "flash attention"},
		{[]string{"--api-key-file", "/no/such/file"}, "--api-key-file"},
	} {
		r := runKvtrim(t, nil, append([]string{"serve", "-m", "/no/such/model.gguf"}, c.args...)...)
		wantOneLineError(t, r, c.want)
	}
	r := runKvtrim(t, []string{"PATH=" + os.Getenv("PATH")}, "serve")
	wantOneLineError(t, r, "no model")
}

func TestServeEnvironment(t *testing.T) {
	env := map[string]string{
		"LLAMA_ARG_MODEL": "env.gguf", "LLAMA_ARG_PORT": "1234", "LLAMA_ARG_CTX_SIZE": "2048",
		"LLAMA_ARG_N_PARALLEL": "4", "LLAMA_ARG_ENDPOINT_METRICS": "on", "LLAMA_ARG_FLASH_ATTN": "off",
		"LLAMA_ARG_ALIAS": "envmodel", "LLAMA_ARG_API_KEY": "k1,k2", "LLAMA_ARG_THREADS": "3", "LLAMA_ARG_N_PREDICT": "7",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	f, _, cfg, err := parseServe([]string{"--port", "9000", "-a", "flagmodel"}, lookup, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f.port != 9000 || cfg.Alias != "flagmodel" {
		t.Errorf("the command line must win over the environment: port %d alias %q", f.port, cfg.Alias)
	}
	if f.g.model != "env.gguf" || cfg.CtxSize != 2048 || cfg.Parallel != 4 || !cfg.Metrics || cfg.FlashAttn != "off" ||
		len(cfg.APIKeys) != 2 || cfg.Threads != 3 || cfg.Sampling.NPredict != 7 {
		t.Errorf("from the environment: model %q config %+v", f.g.model, cfg)
	}
	env["LLAMA_ARG_PORT"] = "eighty"
	if _, _, _, err := parseServe(nil, lookup, io.Discard); err == nil || !strings.Contains(err.Error(), "LLAMA_ARG_PORT") {
		t.Errorf("a bad LLAMA_ARG_PORT: %v", err)
	}
}

func TestServeEndToEnd(t *testing.T) {
	model := testenv.ModelPath(t, "stories260K.gguf")
	testenv.Library(t) // fetched if missing
	cmd := exec.Command(binary, "serve", "--port", "0", "-t", "1", "-c", "512", "--log-format", "json", "--metrics")
	cmd.Env = append(os.Environ(), "LLAMA_ARG_MODEL="+model)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	addr := make(chan string, 1)
	var logs strings.Builder
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			var line struct{ Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Addr != "" {
				addr <- line.Addr
			}
		}
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatal("kvtrim serve did not say where it listens")
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not healthy after 30s: %v", err)
		}
	}
	resp, err := http.Post(base+"/v1/completions", "application/json", strings.NewReader(`{"prompt":"Once upon a time","max_tokens":8,"temperature":0}`))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Choices []struct{ Text string }
		Usage   struct {
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(got.Choices) != 1 || got.Usage.CompletionTokens != 8 {
		t.Fatalf("completion: %d %+v", resp.StatusCode, got)
	}
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { <-logDone; done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGINT: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("still running 20s after SIGINT\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "stopped") {
		t.Errorf("no clean stop in the log:\n%s", logs.String())
	}
}
