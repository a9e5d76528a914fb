package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvtrim/kvtrim/internal/server"
	"github.com/kvtrim/kvtrim/internal/testenv"
)

// flagList is the committed list of llama-server's flags.
const flagList = "../../testdata/serve/llama-server-flags.txt"

// TestServeTakesEveryLlamaFlag: every spelling of every flag llama-server
// 0.5.0 documents parses in kvtrim serve, with a value where it takes one:
// kvtrim's own flags do what they do, the others are taken and listed as
// given (the server logs them); the TLS flags stop it with a reason. With
// KVTRIM_LLAMA_BIN naming a folder holding llama-server, the committed
// list is checked against its --help.
func TestServeTakesEveryLlamaFlag(t *testing.T) {
	b := readRecorded(t, flagList, "record-flags.sh")
	keyFile := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keyFile, []byte("k1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	schemaFile := filepath.Join(t.TempDir(), "schema.json")
	if err := os.WriteFile(schemaFile, []byte(`{"type":"string"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Values kvtrim's own flags accept; the others take any.
	values := map[string]string{
		"flash-attn": "on", "host": "127.0.0.1", "api-key-file": keyFile, "grammar-file": keyFile, "chat-template-file": keyFile, "chat-template": "chatml",
		"json-schema": `{"type":"integer"}`, "json-schema-file": schemaFile, "chat-template-kwargs": `{"a":1}`, "reasoning": "off", "reasoning-format": "none", "reasoning-effort": "low",
		"samplers": "top_k;temperature", "sampling-seq": "kt",
		"temp": "0.5", "top-p": "0.9", "min-p": "0.05", "slot-prompt-similarity": "0.5", "log-file": filepath.Join(t.TempDir(), "log"),
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) < 200 {
		t.Fatalf("%s lists %d flags: too few to be llama-server's", flagList, len(lines))
	}
	taken := 0
	for _, line := range lines {
		spellings, kind, ok := strings.Cut(line, " ")
		if !ok || (kind != "value" && kind != "switch") {
			t.Fatalf("%s: %q is not SPELLINGS value|switch", flagList, line)
		}
		for _, sp := range strings.Split(spellings, ",") {
			if sp == "-h" || sp == "--help" || sp == "--usage" {
				continue
			}
			fs, _, _ := serveFlagSet()
			name := strings.TrimLeft(sp, "-")
			if len(name) == 1 {
				if f := fs.ShorthandLookup(name); f != nil {
					name = f.Name
				}
			} else if f := fs.Lookup(name); f != nil {
				name = f.Name
			}
			args := []string{"-m", "model.gguf", sp}
			if kind == "value" {
				v, ok := values[name]
				if !ok {
					v = "1"
				}
				args = append(args, v)
			}
			f, _, _, err := parseServe(args, envLookup(nil), io.Discard)
			switch {
			case name == "ssl-key-file" || name == "ssl-cert-file":
				if err == nil || !strings.Contains(err.Error(), "no TLS") {
					t.Errorf("%v: %v, want TLS refused", args, err)
				}
			case err != nil:
				t.Errorf("%v: %v", args, err)
			case slices.ContainsFunc(f.accepted.flags, func(l llamaFlag) bool { long, _ := l.spellings(); return long[0] == name }):
				if given := f.accepted.given(); len(given) != 1 || given[0].flagName() != "--"+name {
					t.Errorf("%v: given %v, want --%s", args, given, name)
				}
				taken++
			}
		}
	}
	t.Logf("%d llama-server flag spellings taken without being implemented", taken)
}

func TestServeChecksFlagsBeforeLoading(t *testing.T) {
	// The model does not exist: every error must be about the flag, found
	// before anything is loaded.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--kv-policy", "bogus"}, "unknown policy"},
		{[]string{"--kv-policy", "h2o", "--heavy", "8", "--recent", "8", "--kv-decode-policy", "streaming"}, "decode policy streaming after policy h2o: h2o evicts while generating already; drop the decode policy"},
		{[]string{"--kv-policy", "snapkv"}, "--budget"},
		{[]string{"--kv-policy", "snapkv", "--kv-budget", "16", "--kv-window", "32"}, "larger than the window"},
		{[]string{"--port", "70000"}, "--port 70000"},
		{[]string{"-np", "0"}, "parallel 0"},
		{[]string{"--timeout", "0"}, "--timeout 0"},
		{[]string{"--top-p", "2"}, "--top-p"},
		{[]string{"-fa", "maybe"}, "flash attention"},
		{[]string{"--sleep-idle-seconds", "0"}, "--sleep-idle-seconds 0"},
		{[]string{"--samplers", "top_k;infill"}, `"infill" is not a sampler`},
		{[]string{"--mirostat", "3"}, "mirostat 3"},
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

// TestServeQueueAndTimeout: --queue bounds the waiting requests (none by
// default) and --timeout bounds each write of an answer.
func TestServeQueueAndTimeout(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	_, _, cfg, err := parseServe([]string{"-m", "m.gguf"}, none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QueueSize != 0 || cfg.WriteTimeout != 600*time.Second {
		t.Errorf("defaults: queue %d, write timeout %v; want no bound and 600s", cfg.QueueSize, cfg.WriteTimeout)
	}
	_, _, cfg, err = parseServe([]string{"-m", "m.gguf", "--queue", "3", "--timeout", "7"}, none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QueueSize != 3 || cfg.WriteTimeout != 7*time.Second {
		t.Errorf("--queue 3 --timeout 7: queue %d, write timeout %v", cfg.QueueSize, cfg.WriteTimeout)
	}
	if _, _, _, err := parseServe([]string{"-m", "m.gguf", "--queue", "-1"}, none, io.Discard); err == nil || !strings.Contains(err.Error(), "queue") {
		t.Errorf("--queue -1: %v", err)
	}
}

// served is a kvtrim serve process started by a test.
type served struct {
	cmd     *exec.Cmd
	base    string              // http://host:port
	logs    *testenv.SyncBuffer // read while the process runs
	logDone chan struct{}
}

// startServe runs kvtrim serve on stories260K on a free port with args and
// waits until it is healthy.
func startServe(t *testing.T, args ...string) *served {
	t.Helper()
	model := testenv.ModelPath(t, "stories260K.gguf")
	testenv.Library(t) // fetched if missing
	cmd := exec.Command(binary, append([]string{"serve", "--port", "0", "-t", "1", "--log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "LLAMA_ARG_MODEL="+model)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	s := &served{cmd: cmd, logs: &testenv.SyncBuffer{}, logDone: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		defer close(s.logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			s.logs.Write([]byte(sc.Text() + "\n"))
			var line struct{ Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Addr != "" {
				addr <- line.Addr
			}
		}
	}()
	select {
	case a := <-addr:
		s.base = "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatal("kvtrim serve did not say where it listens")
	}
	s.waitHealthy(t, 30*time.Second)
	return s
}

// waitHealthy waits until /health answers 200, at most d.
func (s *served) waitHealthy(t *testing.T, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(s.base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not healthy after %v: %v\n%s", d, err, s.logs.String())
		}
	}
}

// stop sends SIGINT and waits for a clean exit.
func (s *served) stop(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGINT)
	s.wait(t)
}

// wait waits for a clean exit after SIGINT (a second would force it).
func (s *served) wait(t *testing.T) {
	t.Helper()
	done := make(chan error, 1)
	go func() { <-s.logDone; done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGINT: %v\n%s", err, s.logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("still running 30s after SIGINT\n%s", s.logs.String())
	}
	if !strings.Contains(s.logs.String(), "stopped") {
		t.Errorf("no clean stop in the log:\n%s", s.logs.String())
	}
}

func TestServeEndToEnd(t *testing.T) {
	s := startServe(t, "-c", "512", "--metrics")
	base := s.base
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
	s.stop(t)
}

// stream posts a streamed /completion request and returns its body once
// the first chunk has come (the body is closed when the test ends).
func (s *served) stream(t *testing.T, body string) *bufio.Reader {
	t.Helper()
	resp, err := http.Post(s.base+"/completion", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	r := bufio.NewReader(resp.Body)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first chunk %q: %v", line, err)
	}
	return r
}

// TestServeDrainsOnSIGINT: a request streaming when SIGINT comes is
// finished (every token it asked for) before the server exits cleanly.
func TestServeDrainsOnSIGINT(t *testing.T) {
	s := startServe(t, "-c", "2048")
	r := s.stream(t, `{"prompt":"Once upon a time","n_predict":1500,"ignore_eos":true,"temperature":0,"stream":true}`)
	s.cmd.Process.Signal(syscall.SIGINT)
	var last struct {
		Stop            bool `json:"stop"`
		TokensPredicted int  `json:"tokens_predicted"`
	}
	for {
		line, err := r.ReadString('\n')
		if data, ok := strings.CutPrefix(strings.TrimSpace(line), "data: "); ok {
			json.Unmarshal([]byte(data), &last)
		}
		if err != nil {
			break
		}
	}
	if !last.Stop || last.TokensPredicted != 1500 {
		t.Errorf("the stream in flight at SIGINT ended with %+v, want all 1500 tokens", last)
	}
	s.wait(t)
}

// TestServeListensOnEveryHost: --host takes a comma-separated list, as
// llama-server's does, and every address gets the same port.
func TestServeListensOnEveryHost(t *testing.T) {
	hosts := "127.0.0.1,[::1]"
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		hosts = "127.0.0.1,localhost" // no IPv6 loopback here
	} else {
		ln.Close()
	}
	lns, err := listen(hosts, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	if len(lns) != 2 || lns[0].Addr().(*net.TCPAddr).Port != lns[1].Addr().(*net.TCPAddr).Port {
		t.Errorf("listeners %v", lns)
	}
	if _, err := listen("127.0.0.1,no.such.host.invalid", 0); err == nil || !strings.Contains(err.Error(), "no.such.host.invalid") {
		t.Errorf("a bad address: %v", err)
	}
	// llama.cpp's underscores name the same flags.
	f, _, _, err := parseServe([]string{"-m", "m.gguf", "--backend_sampling", "--n_predict", "7"}, envLookup(nil), io.Discard)
	if err != nil || f.g.nPredict != 7 || len(f.accepted.given()) != 1 {
		t.Errorf("underscored flags: %v, n-predict %d", err, f.g.nPredict)
	}
}

// TestServeSamplerFlags: llama-server's sampler flags set the requests'
// defaults.
func TestServeSamplerFlags(t *testing.T) {
	_, _, cfg, err := parseServe([]string{"-m", "m.gguf", "--typical", "0.5", "--top-nsigma", "1.5", "--xtc-probability", "0.3", "--dry-multiplier", "0.8",
		"--dry-sequence-breaker", "a", "--dry-sequence-breaker", "b", "--mirostat", "2", "--mirostat-ent", "3", "--sampling-seq", "kt", "--dynatemp-range", "0.2"}, envLookup(nil), io.Discard)
	s := cfg.Sampling
	if err != nil || s.TypicalP != 0.5 || s.TopNSigma != 1.5 || s.XTCProbability != 0.3 || s.DRYMultiplier != 0.8 || !slices.Equal(s.DRYBreakers, []string{"a", "b"}) ||
		s.Mirostat != 2 || s.MirostatTau != 3 || len(s.Order) != 2 || s.Order[0] != "top_k" || s.DynatempRange != 0.2 {
		t.Errorf("sampling %+v, %v", s, err)
	}
	_, _, cfg, err = parseServe([]string{"-m", "m.gguf", "--dry-sequence-breaker", "none"}, envLookup(nil), io.Discard)
	if err != nil || cfg.Sampling.DRYBreakers == nil || len(cfg.Sampling.DRYBreakers) != 0 {
		t.Errorf(`--dry-sequence-breaker none: %q, %v`, cfg.Sampling.DRYBreakers, err)
	}
}

// TestServeTemplateFlags: Jinja is on by default (a template that does not
// compile then falls back) and strict when --jinja is given; --reasoning
// and --chat-template-kwargs become template variables, -j/-jf a default
// grammar, LLAMA_ARG_* spell them too, and bad values are usage errors.
func TestServeTemplateFlags(t *testing.T) {
	parse := func(env map[string]string, args ...string) (server.Config, error) {
		_, _, cfg, err := parseServe(append([]string{"-m", "m.gguf"}, args...), envLookup(env), io.Discard)
		return cfg, err
	}
	cfg, err := parse(nil)
	if err != nil || !cfg.Jinja || cfg.JinjaStrict || cfg.NoPrefillAssistant || len(cfg.TemplateKwargs) != 0 {
		t.Errorf("defaults: %+v, %v", cfg, err)
	}
	if cfg, err = parse(nil, "--jinja"); err != nil || !cfg.Jinja || !cfg.JinjaStrict {
		t.Errorf("--jinja: %v %v, %v", cfg.Jinja, cfg.JinjaStrict, err)
	}
	if cfg, err = parse(map[string]string{"LLAMA_ARG_JINJA": "0"}); err != nil || cfg.Jinja {
		t.Errorf("LLAMA_ARG_JINJA=0: %v, %v", cfg.Jinja, err)
	}
	if cfg, err = parse(nil, "--no-jinja", "--no-prefill-assistant"); err != nil || cfg.Jinja || !cfg.NoPrefillAssistant {
		t.Errorf("--no-jinja --no-prefill-assistant: %+v, %v", cfg, err)
	}
	cfg, err = parse(nil, "-rea", "off", "--chat-template-kwargs", `{"effort":"low","enable_thinking":true}`)
	if err != nil || cfg.TemplateKwargs["enable_thinking"] != false || cfg.TemplateKwargs["effort"] != "low" {
		t.Errorf("-rea off: %v, %v", cfg.TemplateKwargs, err)
	}
	cfg, err = parse(nil, "--reasoning-effort", "high", "--no-reasoning-preserve")
	if err != nil || cfg.TemplateKwargs["reasoning_effort"] != "high" || cfg.TemplateKwargs["preserve_reasoning"] != false {
		t.Errorf("--reasoning-effort high --no-reasoning-preserve: %v, %v", cfg.TemplateKwargs, err)
	}
	if cfg, err = parse(nil, "-j", `{"type":"boolean"}`); err != nil || !strings.Contains(cfg.Sampling.Grammar, `"true" | "false"`) {
		t.Errorf("-j: %q, %v", cfg.Sampling.Grammar, err)
	}
	for _, bad := range [][]string{{"--reasoning", "maybe"}, {"--chat-template-kwargs", "[1]"}, {"-j", `{"type":"kaboom"}`}, {"-jf", "/no/such/file"}} {
		if _, err := parse(nil, bad...); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
}

// TestGoProcs: Go keeps to the cores llama.cpp's threads leave, at least
// one, unless GOMAXPROCS is set.
func TestGoProcs(t *testing.T) {
	none := envLookup(nil)
	for _, c := range []struct {
		threads, cpus, want int
		set                 bool
	}{
		{2, 2, 1, true}, {0, 2, 1, true}, {4, 16, 12, true}, {16, 16, 1, true}, {32, 16, 1, true}, {0, 1, 1, false},
	} {
		got, set := goProcs(c.threads, c.cpus, none)
		if got != c.want || set != c.set {
			t.Errorf("-t %d on %d CPUs: %d %v, want %d %v", c.threads, c.cpus, got, set, c.want, c.set)
		}
	}
	if _, set := goProcs(2, 2, envLookup(map[string]string{"GOMAXPROCS": "2"})); set {
		t.Error("GOMAXPROCS in the environment was overridden")
	}
}
