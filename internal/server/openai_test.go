package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kvtrim/kvtrim/internal/testenv"
)

// openAIModules is the node_modules folder holding the npm package
// "openai": KVTRIM_OPENAI_NODE_MODULES, or kvtrim's cache, where .ci/run
// installs it (npm install --prefix ~/.cache/kvtrim/node openai@4.104.0).
func openAIModules() string {
	if dir := os.Getenv("KVTRIM_OPENAI_NODE_MODULES"); dir != "" {
		return dir
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(cache, "kvtrim", "node", "node_modules")
}

// runOpenAIScript runs a script of testdata/serve with the official OpenAI
// client library against ts, and returns what it printed; the test is
// skipped where node or the library is not installed.
func runOpenAIScript(t *testing.T, ts *testServer, script string) []byte {
	t.Helper()
	modules := openAIModules()
	if _, err := os.Stat(filepath.Join(modules, "openai", "package.json")); err != nil {
		t.Skipf("the npm package openai is not installed in %s (npm install --prefix %s openai@4.104.0)", modules, filepath.Dir(modules))
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	cmd := exec.Command(node, filepath.Join(testenv.RepoRoot(), "testdata", "serve", script), ts.http.URL+"/v1")
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openai client, %s: %v\n%s", script, err, stderr.String())
	}
	return out
}

// TestOpenAIClient: the official OpenAI client library streams and
// non-streams chat and completions against the server, and gets exactly
// the text of the same requests sent as plain HTTP.
func TestOpenAIClient(t *testing.T) {
	ts := startServer(t, testConfig())
	out := runOpenAIScript(t, ts, "openai-client.cjs")
	var chat, completion generated
	ts.post("/v1/chat/completions", `{"messages":[{"role":"user","content":"Tell me a story about a dog."}],"max_tokens":24,"temperature":0}`, 200, &chat)
	ts.post("/v1/completions", `{"prompt":"Once upon a time","max_tokens":24,"temperature":0}`, 200, &completion)
	want := map[string]string{"chat": chat.text(), "chat-stream": chat.text(), "completion": completion.text(), "completion-stream": completion.text()}
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r struct {
			Name, Text   string
			FinishReason string `json:"finish_reason"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("client output %q: %v", sc.Text(), err)
		}
		seen++
		if r.Text != want[r.Name] || r.Text == "" || r.FinishReason != "length" {
			t.Errorf("%s through the OpenAI client: %q (finish %q), plain HTTP: %q", r.Name, r.Text, r.FinishReason, want[r.Name])
		}
	}
	if seen != len(want) {
		t.Errorf("the client reported %d of %d requests:\n%s", seen, len(want), out)
	}
}

// TestOpenAIClientTools: through the official OpenAI client, a required
// tool call comes back as tool_calls whose arguments follow the tool's
// schema, the round trip's second turn (the call and the tool's answer)
// is answered, a streamed call is gathered whole from its deltas, and a
// response_format json_schema answer parses and validates.
func TestOpenAIClientTools(t *testing.T) {
	cfg := testConfig()
	cfg.Jinja, cfg.ChatTemplate = true, hermesTemplate
	ts := startServer(t, cfg)
	out := runOpenAIScript(t, ts, "openai-tools.cjs")
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r struct {
			Name, Text   string
			FinishReason string `json:"finish_reason"`
			ToolCalls    []struct {
				ID       string
				Function struct{ Name, Arguments string }
			} `json:"tool_calls"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("client output %q: %v", sc.Text(), err)
		}
		seen[r.Name] = true
		switch r.Name {
		case "call", "call-stream":
			var args struct {
				City string
				Days int
			}
			if len(r.ToolCalls) != 1 || r.FinishReason != "tool_calls" || r.ToolCalls[0].Function.Name != "get_weather" || r.ToolCalls[0].ID == "" ||
				json.Unmarshal([]byte(r.ToolCalls[0].Function.Arguments), &args) != nil || len([]rune(args.City)) > 8 || args.Days < 1 || args.Days > 7 {
				t.Errorf("%s: %+v", r.Name, r)
			}
		case "second-turn":
			if r.Text == "" || r.FinishReason != "length" {
				t.Errorf("second turn: %+v", r)
			}
		case "json-schema":
			checkPerson(t, r.Text)
		}
	}
	if len(seen) != 4 {
		t.Errorf("the client reported %v:\n%s", seen, out)
	}
}
