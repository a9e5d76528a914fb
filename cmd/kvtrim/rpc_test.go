package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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

// rpcServer is a ggml-rpc-server a test started.
type rpcServer struct {
	dir, endpoint string
	port          int
	cmd           *exec.Cmd
}

// startRPCServer starts dir's ggml-rpc-server on a local port (0: a free
// one) and waits until it accepts connections; it is killed when the test
// ends.
func startRPCServer(t *testing.T, dir string, port int) *rpcServer {
	t.Helper()
	if port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	s := &rpcServer{dir: dir, port: port, endpoint: fmt.Sprintf("127.0.0.1:%d", port)}
	s.cmd = exec.Command(filepath.Join(dir, "ggml-rpc-server"), "-H", "127.0.0.1", "-p", fmt.Sprint(port), "-t", "1")
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := s.cmd
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.Dial("tcp", s.endpoint)
		if err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("ggml-rpc-server on %s: %v", s.endpoint, err)
		}
	}
}

// kill ends the server at once.
func (s *rpcServer) kill() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// startRPCServers starts n ggml-rpc-servers of dir and returns them and
// their endpoints, comma-separated.
func startRPCServers(t *testing.T, dir string, n int) ([]*rpcServer, string) {
	t.Helper()
	var servers []*rpcServer
	var endpoints []string
	for range n {
		s := startRPCServer(t, dir, 0)
		servers = append(servers, s)
		endpoints = append(endpoints, s.endpoint)
	}
	return servers, strings.Join(endpoints, ",")
}

// TestRPC: with the weights and the KV cache on two ggml-rpc-servers
// (llama.cpp's RPC backend; every tensor kvtrim observes is then read with
// ggml_backend_tensor_get), greedy output equals the local run's, SnapKV
// at 10% keeps the pass keys of at least 19 of 20 prompts, every policy
// answers 6 pass-key prompts as it does locally, kvtrim serve --rpc
// answers, and an endpoint where no server listens is refused in one line
// rather than by llama.cpp's abort.
func TestRPC(t *testing.T) {
	lib := rpcBuild(t)
	_, rpc := startRPCServers(t, lib, 2)
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

	// Every policy reads what it needs from tensors on RPC devices, and
	// answers as it does locally.
	all := "none,recent,random,snapkv,knorm,keydiff,expected-attention,tova,h2o,streaming,snapkv+h2o"
	summaries := make([]string, 2)
	for i, where := range [][]string{nil, {"--rpc", rpc}} {
		js := filepath.Join(t.TempDir(), "all.json")
		args := append([]string{"eval", "passkey", "--lib", lib, "-m", model, "--lengths", "1000", "--depths", "0.2,0.5,0.8",
			"--trials", "2", "--policy", all, "--ratio", "0.1", "--json", js}, where...)
		if r := runKvtrim(t, nil, args...); r.code != 0 {
			t.Fatalf("eval %v: exit %d: %s", where, r.code, r.stderr)
		}
		var rep struct {
			Summary []struct {
				Policy          string
				Trials, Correct int
			}
		}
		if b, err := os.ReadFile(js); err != nil || json.Unmarshal(b, &rep) != nil || len(rep.Summary) != 11 {
			t.Fatalf("eval %v: %d summaries, %v", where, len(rep.Summary), err)
		}
		summaries[i] = fmt.Sprint(rep.Summary)
	}
	if summaries[0] != summaries[1] {
		t.Errorf("every policy, 6 pass-key prompts each: locally %s, over RPC %s", summaries[0], summaries[1])
	}

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

// TestRPCServeSurvivesDeadServer: kvtrim serve --rpc runs the model in a
// process of its own. When one of its RPC servers is killed mid-request
// (llama.cpp then ends that process), the streaming client gets a last
// event with llama-server's error JSON at once, not a hang; /health says
// 503 while the server is down; once it is back, the model's process is
// started again and the next request is answered.
func TestRPCServeSurvivesDeadServer(t *testing.T) {
	lib := rpcBuild(t)
	servers, rpc := startRPCServers(t, lib, 2)
	s := startServe(t, "--lib", lib, "--rpc", rpc, "-c", "4096")
	r := s.stream(t, `{"prompt":"Once upon a time","n_predict":3000,"ignore_eos":true,"stream":true}`)
	servers[1].kill()
	rest := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		rest <- string(b)
	}()
	select {
	case tail := <-rest:
		if !strings.Contains(tail, `"type":"unavailable_error"`) || !strings.Contains(tail, "ended mid-request") {
			t.Errorf("the stream ended without an error event:\n%s", tail[max(0, len(tail)-500):])
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stream still runs 30 s after its RPC server was killed")
	}
	if resp, err := http.Get(s.base + "/health"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/health with an RPC server down: %v %v, want 503", resp.Status, err)
	}
	startRPCServer(t, lib, servers[1].port)
	s.waitHealthy(t, 60*time.Second)
	resp, err := http.Post(s.base+"/completion", "application/json", strings.NewReader(`{"prompt":"Once upon a time","n_predict":8,"temperature":0}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("the next request: %s", resp.Status)
	}
	s.stop(t)
}

// TestWriteDeadlines: behind serve --rpc's proxy, a client that stops
// reading an answer loses it after the timeout (its write fails) instead
// of holding the connection; one that reads gets the whole answer, flushed
// as it comes.
func TestWriteDeadlines(t *testing.T) {
	wrote := make(chan error, 1)
	big := strings.Repeat("x", 1<<20)
	h := writeDeadlines(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var err error
		for i := 0; i < 64 && err == nil; i++ {
			_, err = io.WriteString(w, big)
			w.(http.Flusher).Flush()
		}
		wrote <- err
	}), 200*time.Millisecond)
	ts := httptest.NewServer(h)
	defer ts.Close()

	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") // and never read
	select {
	case err := <-wrote:
		if err == nil {
			t.Error("64 MiB written to a client that reads nothing")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write to a client that stopped reading still blocks after 10 s (deadline 200 ms)")
	}

	resp, err := http.Get(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != 64<<20 || <-wrote != nil {
		t.Errorf("a reading client got %d bytes (%v), want all %d", n, err, 64<<20)
	}
}
