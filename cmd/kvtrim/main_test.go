package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim/internal/testenv"
)

// binary is kvtrim built once for the tests that run it as a user would.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kvtrim-cli-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "kvtrim")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// runKvtrim runs the binary with args in env (nil: the test's environment).
// Commands that decode get one thread unless the test sets -t: go test runs
// packages in parallel, and llama.cpp's spinning workers slow down by orders
// of magnitude when they outnumber the cores.
func runKvtrim(t *testing.T, env []string, args ...string) result {
	t.Helper()
	if len(args) > 0 && slices.Contains([]string{"run", "demo", "eval", "bench"}, args[0]) && !slices.Contains(args, "-t") {
		args = append(args, "-t", "1")
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run kvtrim: %v", err)
	}
	return r
}

// wantOneLineError checks that a run failed with exactly one line on stderr,
// naming every one of want, and no Go panic or stack trace.
func wantOneLineError(t *testing.T, r result, want ...string) {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("exit status 0, want an error; stderr:\n%s", r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 {
		t.Errorf("stderr has %d lines, want one:\n%s", len(lines), r.stderr)
	}
	for _, bad := range []string{"panic", "goroutine ", ".go:"} {
		if strings.Contains(r.stderr, bad) {
			t.Errorf("stderr shows a Go crash (%q):\n%s", bad, r.stderr)
		}
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("error does not mention %q:\n%s", w, r.stderr)
		}
	}
}

func TestNoLibraryAnywhere(t *testing.T) {
	home := t.TempDir()
	env := []string{"HOME=" + home, "XDG_CACHE_HOME=" + filepath.Join(home, "cache"), "PATH=" + t.TempDir()}
	r := runKvtrim(t, env, "run", "-m", "model.gguf", "-p", "hi")
	wantOneLineError(t, r, "no libllama found", "kvtrim lib fetch", filepath.Join(home, "cache"))
}

func TestLibraryNotASharedObject(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"libggml-base.so", "libggml.so", "libllama.so"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("not an ELF file\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := runKvtrim(t, nil, "run", "--lib", dir, "-m", "model.gguf", "-p", "hi")
	wantOneLineError(t, r, "cannot load", "as a shared library", "kvtrim lib fetch")
}

func TestLibraryOfAnotherVersion(t *testing.T) {
	dir := testenv.OtherVersionLib(t)
	r := runKvtrim(t, nil, "run", "--lib", dir, "-m", "model.gguf", "-p", "hi")
	wantOneLineError(t, r, dir, "b8390", "kvtrim supports llama.cpp 0.5.0", "kvtrim lib fetch")
}

func TestBadModels(t *testing.T) {
	lib := testenv.Library(t).Dir
	good, err := os.ReadFile(testenv.ModelPath(t, "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	random := make([]byte, 64<<10)
	rand.Read(random)
	files := map[string][]byte{
		"truncated.gguf":         good[:len(good)/3],
		"header-only.gguf":       good[:1000],
		"random.gguf":            random,
		"random-with-magic.gguf": append([]byte("GGUF"), random...),
		"empty.gguf":             nil,
	}
	for name, data := range files {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			r := runKvtrim(t, nil, "run", "--lib", lib, "-m", path, "-p", "hi", "-n", "4")
			wantOneLineError(t, r, "load model "+path)
		})
	}
	t.Run("missing", func(t *testing.T) {
		r := runKvtrim(t, nil, "run", "--lib", lib, "-m", filepath.Join(dir, "nope.gguf"), "-p", "hi")
		wantOneLineError(t, r, "nope.gguf", "no such file", "-m")
	})
}

func TestBadPromptsAndNumbers(t *testing.T) {
	lib := testenv.Library(t).Dir
	model := testenv.ModelPath(t, "stories260K.gguf")
	long := strings.Repeat("The grass is green. ", 100)
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"prompt longer than -c", []string{"-p", long, "-c", "64"}, []string{"do not fit", "-c"}},
		{"empty prompt", []string{"-p", ""}, []string{"empty prompt"}},
		{"no prompt", nil, []string{"empty prompt"}},
		{"negative -n", []string{"-p", "hi", "-n", "-5"}, []string{"-n -5"}},
		{"absurd -n", []string{"-p", "hi", "-n", "99999999999"}, []string{"-n"}},
		{"negative -c", []string{"-p", "hi", "-c", "-1"}, []string{"-c -1"}},
		{"absurd -c", []string{"-p", "hi", "-c", "1000000000"}, []string{"-c 1000000000"}},
		{"zero -t", []string{"-p", "hi", "-t", "0"}, []string{"-t 0"}},
		{"absurd -t", []string{"-p", "hi", "-t", "100000"}, []string{"-t 100000"}},
		{"bad -fa", []string{"-p", "hi", "-fa", "maybe"}, []string{"maybe", "on, off or auto"}},
		{"unknown flag", []string{"-p", "hi", "--frobnicate"}, []string{"frobnicate"}},
		{"missing prompt file", []string{"-f", "/nonexistent/prompt.txt"}, []string{"/nonexistent/prompt.txt"}},
		{"chat without a template", []string{"-p", "hi", "--chat"}, []string{"no chat template", "--chat"}},
		{"unknown policy", []string{"-p", "hi", "--policy", "magic"}, []string{"unknown policy", "magic"}},
		{"budget not above window", []string{"-p", "hi", "--policy", "snapkv", "--budget", "32", "--window", "32"}, []string{"budget 32", "window 32"}},
		{"even kernel", []string{"-p", "hi", "--policy", "snapkv", "--budget", "64", "--kernel", "4"}, []string{"kernel 4"}},
		{"zero kernel", []string{"-p", "hi", "--policy", "snapkv", "--budget", "64", "--kernel", "0"}, []string{"kernel"}},
		{"negative kernel", []string{"-p", "hi", "--policy", "snapkv", "--budget", "64", "--kernel", "-1"}, []string{"kernel -1"}},
		{"negative lookahead", []string{"-p", "hi", "--policy", "snapkv", "--budget", "64", "--lookahead", "-2"}, []string{"lookahead -2"}},
		{"unknown pooling", []string{"-p", "hi", "--policy", "snapkv", "--budget", "64", "--pool", "median"}, []string{"median"}},
		{"unknown aggregation", []string{"-p", "hi", "--policy", "snapkv", "--budget", "64", "--aggregate", "mean-ish"}, []string{"mean-ish"}},
		{"no budget", []string{"-p", "hi", "--policy", "snapkv"}, []string{"--budget"}},
		{"window longer than prompt", []string{"-p", "hi there", "--policy", "snapkv", "--ratio", "0.5", "--window", "64"}, []string{"window"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"run", "--lib", lib, "-m", model}, c.args...)
			wantOneLineError(t, runKvtrim(t, nil, args...), c.want...)
		})
	}
}

// TestRunStreamsOnlyText: stdout holds the generated text alone, logs go to
// stderr, and llama.cpp's chatter appears only with -v.
func TestRunStreamsOnlyText(t *testing.T) {
	lib := testenv.Library(t).Dir
	model := testenv.ModelPath(t, "stories260K.gguf")
	stats := filepath.Join(t.TempDir(), "stats.json")
	r := runKvtrim(t, nil, "run", "--lib", lib, "-m", model, "-p", "Once upon a time", "-n", "16", "--temp", "0",
		"-ngl", "0", "-ub", "64", "-t", "1", "--stats-json", stats)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, ", there was a little girl named Lily") {
		t.Errorf("stdout = %q", r.stdout)
	}
	if strings.TrimSpace(r.stderr) != "" {
		t.Errorf("a quiet run wrote to stderr:\n%s", r.stderr)
	}
	b, err := os.ReadFile(stats)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"prompt_tokens": 5`, `"decode_tokens": 15`, `"decode_tok_s"`, `"prefill_ms"`, `"n_ubatch": 64`, `"threads": 1`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("stats JSON lacks %s:\n%s", key, b)
		}
	}
	v := runKvtrim(t, nil, "run", "--lib", lib, "-m", model, "-p", "Once upon a time", "-n", "4", "--temp", "0", "-v")
	if !strings.Contains(v.stderr, "llama.cpp") || !strings.Contains(v.stderr, "print_info") {
		t.Errorf("-v does not show llama.cpp's log:\n%.500s", v.stderr)
	}
	if !strings.HasPrefix(r.stdout, strings.TrimRight(v.stdout, "\n")) {
		t.Errorf("-v changed stdout: %q", v.stdout)
	}
}

// TestRunSnapKVStats: --stats-json of a compressed run holds the issue's
// fields, with the cells and bytes actually saved.
func TestRunSnapKVStats(t *testing.T) {
	lib := testenv.Library(t).Dir
	model := testenv.ModelPath(t, "stories260K.gguf")
	stats := filepath.Join(t.TempDir(), "stats.json")
	prompt := strings.Repeat("Tom had a red ball. He liked to play with it in the park. ", 20)
	r := runKvtrim(t, nil, "run", "--lib", lib, "-m", model, "-p", prompt, "-n", "8", "--temp", "0",
		"--policy", "snapkv", "--ratio", "0.25", "--window", "16", "--stats-json", stats)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	b, err := os.ReadFile(stats)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"prompt_tokens", "kept_cells", "evicted_cells", "n_kv_before", "n_kv_after",
		"kv_bytes_before", "kv_bytes_after", "prefill_ms", "observe_ms", "score_ms", "evict_ms", "compact_ms",
		"decode_tokens", "decode_ms", "decode_tok_s", `"policy": "snapkv"`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("stats JSON lacks %s:\n%s", key, b)
		}
	}
	if bytes.Contains(b, []byte(`"evicted_cells": 0,`)) {
		t.Errorf("nothing was evicted:\n%s", b)
	}
}

func TestDemo(t *testing.T) {
	lib := testenv.Library(t).Dir
	r := runKvtrim(t, nil, "demo", "--lib", lib)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, w := range []string{"full cache:", "snapkv:", "cells kept", "n_kv after prefill", "decode tokens/s"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("demo output lacks %q:\n%s", w, r.stdout)
		}
	}
}

func TestNormalizeArgs(t *testing.T) {
	fs := newFlagSet("t", "t")
	var g genFlags
	g.register(fs)
	got := normalizeArgs(fs, []string{"-ngl", "99", "-ub=64", "-fa", "on", "-n", "5", "-top-k", "3", "-xyz", "--", "-ngl"})
	want := []string{"--n-gpu-layers", "99", "--ubatch-size=64", "--flash-attn", "on", "-n", "5", "--top-k", "3", "-xyz", "--", "-ngl"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("normalizeArgs = %q, want %q", got, want)
	}
	if err := parseFlags(fs, []string{"-ngl", "7", "-ub", "32", "-c", "100", "-s", "42"}, os.Stderr); err != nil {
		t.Fatal(err)
	}
	if g.gpuLayers != 7 || g.nUbat != 32 || g.nCtx != 100 || g.seed != 42 {
		t.Errorf("parsed -ngl %d -ub %d -c %d -s %d", g.gpuLayers, g.nUbat, g.nCtx, g.seed)
	}
}

func TestVersionAndLib(t *testing.T) {
	lib := testenv.Library(t)
	r := runKvtrim(t, nil, "version", "--lib", lib.Dir)
	if r.code != 0 || !strings.Contains(r.stdout, "kvtrim ") || !strings.Contains(r.stdout, lib.LlamaPath) {
		t.Errorf("version: %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = runKvtrim(t, nil, "lib", "--lib", lib.Dir)
	for _, w := range []string{"looked in:", "--lib", lib.LlamaPath, "0.5.0", "CPU"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("kvtrim lib output lacks %q:\n%s", w, r.stdout)
		}
	}
}

func TestEvalPasskey(t *testing.T) {
	lib := testenv.Library(t).Dir
	model := testenv.ModelPath(t, "kvtrim-retrieval-1m.gguf")
	r := runKvtrim(t, nil, "eval", "passkey", "--lib", lib, "-m", model, "--lengths", "400", "--depths", "0.2",
		"--trials", "2", "--configs", "none,recent,snapkv:quota")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, w := range []string{"| config | 400 @20% | all |", "| none | 2 | 100% |", "| recent | 0 | 0% |", "| snapkv:quota |", "same answer as none"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("eval output lacks %q:\n%s", w, r.stdout)
		}
	}
	bad := runKvtrim(t, nil, "eval", "passkey", "--lib", lib, "-m", model, "--configs", "none,h2x")
	wantOneLineError(t, bad, "h2x")
}

func TestBenchAndRandomModel(t *testing.T) {
	lib := testenv.Library(t).Dir
	path := filepath.Join(t.TempDir(), "random.gguf")
	r := runKvtrim(t, nil, "random-model", "--shape", "test", "-o", path)
	if r.code != 0 {
		t.Fatalf("random-model: exit %d: %s", r.code, r.stderr)
	}
	r = runKvtrim(t, nil, "bench", "--lib", lib, "-m", path, "--prompt-tokens", "300", "-n", "8", "--reps", "1", "--window", "8")
	if r.code != 0 {
		t.Fatalf("bench: exit %d: %s", r.code, r.stderr)
	}
	for _, w := range []string{"full cache", "snapkv", "cells kept", "steps / prefill %", "decode speed, compressed / full:"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("bench output lacks %q:\n%s", w, r.stdout)
		}
	}
}

// TestRefusesModelThatCannotEvict: every compression policy refuses, in one
// line naming the architecture, a model whose memory cannot drop single
// positions (a gemma2 model with sliding-window attention, a recurrent
// mamba model), and both still run without one.
func TestRefusesModelThatCannotEvict(t *testing.T) {
	lib := testenv.Library(t).Dir
	dir := t.TempDir()
	policies := [][]string{
		{"--policy", "snapkv", "--budget", "64"},
		{"--policy", "recent", "--budget", "64"},
		{"--policy", "streaming", "--recent", "32"},
		{"--policy", "h2o", "--heavy", "16", "--recent", "16"},
	}
	for _, c := range []struct{ shape, arch, why string }{
		{"test-swa", "gemma2", "sliding-window"},
		{"test-recurrent", "mamba", "recurrent"},
	} {
		path := filepath.Join(dir, c.shape+".gguf")
		if r := runKvtrim(t, nil, "random-model", "--shape", c.shape, "-o", path); r.code != 0 {
			t.Fatalf("random-model --shape %s: exit %d: %s", c.shape, r.code, r.stderr)
		}
		for _, p := range policies {
			t.Run(c.shape+"/"+p[1], func(t *testing.T) {
				args := append([]string{"run", "--lib", lib, "-m", path, "-p", "hello there"}, p...)
				wantOneLineError(t, runKvtrim(t, nil, args...), path, "architecture "+c.arch, c.why, "--policy none")
			})
		}
	}
	for _, shape := range []string{"test-swa", "test-recurrent"} {
		path := filepath.Join(dir, shape+".gguf")
		r := runKvtrim(t, nil, "run", "--lib", lib, "-m", path, "-p", "hello there", "--policy", "none", "-n", "8")
		if r.code != 0 {
			t.Fatalf("--policy none on %s: exit %d: %s", shape, r.code, r.stderr)
		}
		if strings.TrimSpace(r.stderr) != "" {
			t.Errorf("a quiet run on %s wrote to stderr:\n%s", shape, r.stderr)
		}
	}
}

// TestEvalPPL streams a text through a small cache: StreamingLLM's
// perplexity stays near the dense sliding window's that recomputes its
// window, and the JSON holds one record per configuration.
func TestEvalPPL(t *testing.T) {
	lib := testenv.Library(t).Dir
	model := testenv.ModelPath(t, "stories260K.gguf")
	js := filepath.Join(t.TempDir(), "ppl.json")
	r := runKvtrim(t, nil, "eval", "ppl", "--lib", lib, "-m", model, "-f", filepath.Join(testenv.RepoRoot(), "testdata", "moby-dick-ch1-35.txt"),
		"--tokens", "1500", "--segment", "500", "--configs", "streaming:4+124,window:128,dense:128/32", "--json", js)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var recs []struct {
		Config string    `json:"config"`
		PPL    float64   `json:"ppl"`
		Seg    []float64 `json:"segment_ppl"`
		Tokens int       `json:"tokens"`
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &recs); err != nil || len(recs) != 3 {
		t.Fatalf("json: %v, %d records:\n%s", err, len(recs), b)
	}
	for _, rec := range recs {
		if rec.Tokens != 1499 || len(rec.Seg) != 3 || !(rec.PPL > 1) || math.IsInf(rec.PPL, 0) {
			t.Errorf("%+v", rec)
		}
	}
	if streaming, dense := recs[0].PPL, recs[2].PPL; streaming > 1.05*dense {
		t.Errorf("streaming perplexity %.3f is more than 5%% above the dense window's %.3f", streaming, dense)
	}
	if !strings.Contains(r.stdout, "| streaming:4+124 |") {
		t.Errorf("table:\n%s", r.stdout)
	}
	bad := runKvtrim(t, nil, "eval", "ppl", "--lib", lib, "-m", model, "-f", filepath.Join(testenv.RepoRoot(), "testdata", "moby-dick-ch1-35.txt"),
		"--configs", "dense:8/16")
	wantOneLineError(t, bad, "dense:8/16", "stride")
}
