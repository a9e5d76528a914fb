package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvtrim/kvtrim/internal/testenv"
)

// rpcBuild is a libllama built with ggml's RPC backend and its
// ggml-rpc-server ('kvtrim lib build --rpc --dir DIR'), named by
// $KVTRIM_RPC_LIB; the test skips without it (CI builds one).
func rpcBuild(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KVTRIM_RPC_LIB")
	if dir == "" {
		t.Skip("KVTRIM_RPC_LIB is not set: build a libllama with ggml's RPC backend (kvtrim lib build --rpc --dir DIR) and point it there")
	}
	if _, err := os.Stat(filepath.Join(dir, "ggml-rpc-server")); err != nil {
		t.Fatalf("KVTRIM_RPC_LIB=%s: no ggml-rpc-server there (kvtrim lib build --rpc builds it)", dir)
	}
	return dir
}

// startRPCServers starts n ggml-rpc-servers of dir on free local ports and
// returns their endpoints, comma-separated, once each accepts connections.
func startRPCServers(t *testing.T, dir string, n int) string {
	t.Helper()
	var endpoints []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		cmd := exec.Command(filepath.Join(dir, "ggml-rpc-server"), "-H", "127.0.0.1", "-p", fmt.Sprint(port), "-t", "1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		endpoint := fmt.Sprintf("127.0.0.1:%d", port)
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			c, err := net.Dial("tcp", endpoint)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ggml-rpc-server on %s: %v", endpoint, err)
			}
		}
		endpoints = append(endpoints, endpoint)
	}
	return strings.Join(endpoints, ",")
}

// TestRPC: with the weights and the KV cache on two ggml-rpc-servers
// (llama.cpp's RPC backend; every tensor kvtrim observes is then read with
// ggml_backend_tensor_get), greedy output equals the local run's, SnapKV
// at 10% keeps the pass keys of at least 19 of 20 prompts, kvtrim serve
// --rpc answers, and an endpoint where no server listens is refused in one
// line rather than by llama.cpp's abort.
func TestRPC(t *testing.T) {
	lib := rpcBuild(t)
	rpc := startRPCServers(t, lib, 2)
	model := testenv.ModelPath(t, "kvtrim-retrieval-1m.gguf")
	prompt := "The pass key is 48213. Remember it. The grass is green. The sky is blue. The sun is bright. What is the pass key? The pass key is"
	local := runKvtrim(t, nil, "run", "--lib", lib, "-m", model, "-p", prompt, "-n", "12", "--temp", "0")
	remote := runKvtrim(t, nil, "run", "--lib", lib, "--rpc", rpc, "-m", model, "-p", prompt, "-n", "12", "--temp", "0", "-v")
	if local.code != 0 || remote.code != 0 || local.stdout != remote.stdout || local.stdout == "" {
		t.Fatalf("greedy: local %q (exit %d), over RPC %q (exit %d): %s%s", local.stdout, local.code, remote.stdout, remote.code, local.stderr, remote.stderr)
	}
	if !strings.Contains(remote.stderr, "KV buffer size") || !strings.Contains(remote.stderr, "RPC") {
		t.Errorf("the KV cache was not placed on the RPC devices:\n%s", remote.stderr)
	}

	js := filepath.Join(t.TempDir(), "eval.json")
	ev := runKvtrim(t, nil, "eval", "passkey", "--lib", lib, "--rpc", rpc, "-m", model, "--lengths", "1000",
		"--depths", "0.1,0.3,0.5,0.7,0.9", "--trials", "4", "--policy", "snapkv", "--ratio", "0.1", "--json", js)
	if ev.code != 0 {
		t.Fatalf("eval over RPC: exit %d: %s", ev.code, ev.stderr)
	}
	var rep struct {
		Summary []struct{ Trials, Correct int }
	}
	if b, err := os.ReadFile(js); err != nil || json.Unmarshal(b, &rep) != nil || len(rep.Summary) != 1 {
		t.Fatalf("eval report: %v", err)
	}
	if s := rep.Summary[0]; s.Trials != 20 || s.Correct < 19 {
		t.Errorf("SnapKV at 10%% over RPC found %d of %d pass keys, want at least 19", s.Correct, s.Trials)
	}
	t.Logf("SnapKV at 10%% over RPC: %d of %d pass keys", rep.Summary[0].Correct, rep.Summary[0].Trials)

	s := startServe(t, "--lib", lib, "--rpc", rpc, "-c", "512")
	resp, err := http.Post(s.base+"/completion", "application/json", strings.NewReader(`{"prompt":"Once upon a time","n_predict":8,"temperature":0}`))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Content         string
		TokensPredicted int `json:"tokens_predicted"`
	}
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != 200 || got.TokensPredicted != 8 {
		t.Errorf("kvtrim serve --rpc: %d %+v", resp.StatusCode, got)
	}
	s.stop(t)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	wantOneLineError(t, runKvtrim(t, nil, "run", "--lib", lib, "--rpc", dead, "-m", model, "-p", "hi"), "--rpc "+dead, "connection refused", "ggml-rpc-server")
}
