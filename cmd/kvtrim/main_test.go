package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvtrim/kvtrim/bindings"
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
	wantOneLineError(t, r, dir, "older than b8390", "file name says b8179", "kvtrim supports llama.cpp "+bindings.SupportedNames(), "kvtrim lib fetch")
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
		{"decode policy after h2o", []string{"-p", "hi", "--policy", "h2o", "--heavy", "8", "--recent", "8", "--decode-policy", "streaming"}, []string{"decode policy streaming after policy h2o: h2o evicts while generating already; drop the decode policy"}},
		{"no budget", []string{"-p", "hi", "--policy", "snapkv"}, []string{"--budget"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"run", "--lib", lib, "-m", model}, c.args...)
			wantOneLineError(t, runKvtrim(t, nil, args...), c.want...)
		})
	}
}

// TestRunWarnsWhenPromptTooShort: a prompt too short to compress at the
// given ratio (its budget would not exceed the window) runs uncompressed,
// and stderr says why.
func TestRunWarnsWhenPromptTooShort(t *testing.T) {
	lib := testenv.Library(t).Dir
	r := runKvtrim(t, nil, "run", "--lib", lib, "-m", testenv.ModelPath(t, "stories260K.gguf"), "-p", "hi there",
		"--policy", "snapkv", "--ratio", "0.5", "--window", "64", "-n", "4")
	if r.code != 0 || !strings.Contains(r.stderr, "too short to compress") || !strings.Contains(r.stderr, "window 64") {
		t.Errorf("exit %d, stderr:\n%s", r.code, r.stderr)
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
		"kv_bytes_before", "kv_bytes_after", "kv_bytes_peak", "n_ctx_peak", "prefill_ms", "observe_ms", "score_ms", "evict_ms", "compact_ms",
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

// TestEvalPasskey runs a small grid of two budgets on the retrieval model
// and checks the JSON report's structure, the markdown and the pictures,
// and that the full cache is as accurate as RETRIEVAL.md measured it
// (98-100% up to 1024 tokens: at least 22 of 24 here).
func TestEvalPasskey(t *testing.T) {
	lib := testenv.Library(t).Dir
	model := testenv.ModelPath(t, "kvtrim-retrieval-1m.gguf")
	dir := t.TempDir()
	js, md, png := filepath.Join(dir, "e.json"), filepath.Join(dir, "e.md"), filepath.Join(dir, "png")
	r := runKvtrim(t, nil, "eval", "passkey", "--lib", lib, "-m", model, "--lengths", "256,1000", "--depths", "0.1,0.5,0.9",
		"--trials", "4", "--policy", "none,recent,snapkv", "--ratio", "0.1,0.2", "--window", "8", "--json", js, "--md", md, "--png", png)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var rep struct {
		Task       string
		BudgetUnit string `json:"budget_unit"`
		Complete   bool
		Machine    struct{ CPUs int }
		Records    []struct {
			Policy                  string
			Budget, Depth, Accuracy float64
			Length, Trials, Correct int
			SameAsFull              int `json:"same_as_full"`
		}
		Summary []struct {
			Policy           string
			Budget, Accuracy float64
			Trials, Correct  int
		}
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	// 6 grid cells, each with none once and two policies at two budgets.
	if rep.Task != "passkey" || rep.BudgetUnit != "ratio" || !rep.Complete || rep.Machine.CPUs < 1 || len(rep.Records) != 6*5 || len(rep.Summary) != 5 {
		t.Fatalf("report: task %q unit %q complete %v, %d records, %d summaries", rep.Task, rep.BudgetUnit, rep.Complete, len(rep.Records), len(rep.Summary))
	}
	for _, rec := range rep.Records {
		if rec.Trials != 4 || rec.Correct > 4 || rec.Accuracy != float64(rec.Correct)/4 || (rec.Policy == "none") != (rec.Budget == 0) {
			t.Errorf("record %+v", rec)
		}
	}
	acc := map[string]float64{}
	for _, s := range rep.Summary {
		acc[fmt.Sprintf("%s@%g", s.Policy, s.Budget)] = s.Accuracy
		if s.Trials != 24 {
			t.Errorf("summary %+v: want 24 trials", s)
		}
	}
	if acc["none@0"] < 22.0/24 {
		t.Errorf("full cache accuracy %.2f, RETRIEVAL.md measured 98-100%%", acc["none@0"])
	}
	if acc["snapkv@0.1"] <= acc["recent@0.1"] || acc["recent@0.1"] > 0.2 {
		t.Errorf("accuracy at 10%%: snapkv %.2f, recent %.2f", acc["snapkv@0.1"], acc["recent@0.1"])
	}
	if m, err := os.ReadFile(md); err != nil || !strings.Contains(string(m), "| snapkv | 10% | 24 |") || string(m) != r.stdout {
		t.Errorf("markdown file (%v) differs from stdout or lacks the summary:\n%s", err, m)
	}
	for _, name := range []string{"passkey-none.png", "passkey-snapkv-10pct.png", "passkey-recent-20pct.png", "passkey-accuracy-by-budget.png"} {
		if st, err := os.Stat(filepath.Join(png, name)); err != nil || st.Size() < 1000 {
			t.Errorf("picture %s: %v", name, err)
		}
	}
}

// TestEvalLines: the multi-key task's report names the lines per prompt
// and, since the model has not learnt the task, measures agreement with the
// full cache beside accuracy.
func TestEvalLines(t *testing.T) {
	lib := testenv.Library(t).Dir
	model := testenv.ModelPath(t, "kvtrim-retrieval-1m.gguf")
	js := filepath.Join(t.TempDir(), "lines.json")
	r := runKvtrim(t, nil, "eval", "lines", "--lib", lib, "-m", model, "--lengths", "512", "--lines", "5", "--depths", "0.5",
		"--trials", "3", "--policy", "none,snapkv", "--window", "8", "--json", js)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var rep struct {
		Task    string
		Records []struct {
			Policy        string
			Lines, Trials int
			SameAsFull    int     `json:"same_as_full"`
			Agreement     float64 `json:"agreement"`
		}
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil || rep.Task != "lines" || len(rep.Records) != 2 {
		t.Fatalf("report (%v):\n%s", err, b)
	}
	if !strings.Contains(r.stdout, "| 512/5 lines @50% |") {
		t.Errorf("table header:\n%s", r.stdout)
	}
	bad := runKvtrim(t, nil, "eval", "lines", "--lib", lib, "-m", model, "--lengths", "512", "--lines", "1")
	wantOneLineError(t, bad, "--lines 1")
	for _, rec := range rep.Records {
		if rec.Lines != 5 || rec.Trials != 3 || rec.Agreement != float64(rec.SameAsFull)/3 || (rec.Policy == "none" && rec.SameAsFull != 3) {
			t.Errorf("record %+v", rec)
		}
	}
}

// TestEvalRecall: the recall task runs RECALL.md's public set (found
// beside the model) under each policy, counts prompts by length, and
// scores every question of a prompt: the full cache answers them all, as
// RECALL.md measured; the recent-only cache at 10% misses most; SnapKV
// with its defaults (the window adapted to the budget) answers at least
// 93% at 10% (issue 13's target; a window of 32 answered 80%).
func TestEvalRecall(t *testing.T) {
	lib := testenv.Library(t).Dir
	model := testenv.ModelPath(t, "kvtrim-recall-0.5m.gguf")
	js := filepath.Join(t.TempDir(), "recall.json")
	r := runKvtrim(t, nil, "eval", "recall", "--lib", lib, "-m", model, "--policy", "none,recent,snapkv", "--ratio", "0.1", "-t", "1", "--json", js)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var rep struct {
		Task    string
		Summary []struct {
			Policy          string
			Trials, Correct int
		}
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil || rep.Task != "recall" || len(rep.Summary) != 3 {
		t.Fatalf("report (%v):\n%s", err, b)
	}
	if full, recent, snap := rep.Summary[0], rep.Summary[1], rep.Summary[2]; full.Trials != 30 || full.Correct != 30 || recent.Correct > 10 || snap.Correct < 28 {
		t.Errorf("full cache %+v, recent at 10%% %+v, snapkv at 10%% %+v", full, recent, snap)
	}
	if !strings.Contains(r.stdout, "| 512 tokens | 1024 tokens | 2048 tokens |") {
		t.Errorf("table header:\n%s", r.stdout)
	}
	bad := runKvtrim(t, nil, "eval", "recall", "--lib", lib, "-m", model, "--prompts", "/no/such/set.jsonl")
	wantOneLineError(t, bad, "/no/such/set.jsonl", "--prompts")
}

// TestEvalBadInput: each mistake is one line naming it, before any prompt
// is run.
func TestEvalBadInput(t *testing.T) {
	lib := testenv.Library(t).Dir
	model := testenv.ModelPath(t, "kvtrim-retrieval-1m.gguf")
	base := []string{"eval", "passkey", "--lib", lib, "-m", model, "--window", "8"}
	noSlot := filepath.Join(t.TempDir(), "format.txt")
	if err := os.WriteFile(noSlot, []byte("[INST] question [/INST]"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"unknown policy", []string{"--policy", "none,h2x"}, []string{"h2x"}},
		{"empty grid", []string{"--depths", ""}, []string{"--depths"}},
		{"no trials", []string{"--trials", "0"}, []string{"--trials 0"}},
		{"zero ratio", []string{"--ratio", "0.1,0"}, []string{"--ratio 0"}},
		{"ratio above one", []string{"--ratio", "1.5"}, []string{"--ratio 1.5"}},
		{"budget of one cell", []string{"--budget", "64,1"}, []string{"--budget 1"}},
		{"budget inside the window", []string{"--lengths", "256", "--ratio", "0.1", "--window", "32"}, []string{"snapkv", "26 cells", "window of 32"}},
		{"past the training context", []string{"--lengths", "1500", "--strict"}, []string{"1500", "1024", "--strict"}},
		{"prompt format without a slot", []string{"--prompt-format", noSlot}, []string{noSlot, "{prompt}"}},
		{"chat without a template", []string{"--chat"}, []string{"no chat template", "--prompt-format"}},
		{"unwritable json", []string{"--json", "/nonexistent/dir/e.json"}, []string{"--json", "/nonexistent/dir"}},
		{"unwritable pictures", []string{"--png", "/proc/kvtrim-pictures"}, []string{"--png", "/proc/kvtrim-pictures"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantOneLineError(t, runKvtrim(t, nil, append(base, c.args...)...), c.want...)
		})
	}
}

// TestEvalInterrupted: SIGINT stops a long evaluation, which writes what
// it finished (complete: false) and exits with an error.
func TestEvalInterrupted(t *testing.T) {
	lib := testenv.Library(t).Dir
	model := testenv.ModelPath(t, "kvtrim-retrieval-1m.gguf")
	js := filepath.Join(t.TempDir(), "e.json")
	cmd := exec.Command(binary, "eval", "passkey", "--lib", lib, "-m", model, "--lengths", "512", "--depths", "0.5",
		"--trials", "1000", "--policy", "none,snapkv", "--window", "8", "--json", js, "-t", "1", "--log-format", "json")
	var stderr testenv.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(stderr.String(), `"done":3`) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no progress after 60 s:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Fatalf("interrupted eval: %v, want a non-zero exit", err)
	}
	var rep struct {
		Complete bool
		Records  []struct{ Trials int }
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatalf("no report after the interrupt: %v\n%s", err, stderr.String())
	}
	if err := json.Unmarshal(b, &rep); err != nil || rep.Complete || len(rep.Records) != 2 || rep.Records[0].Trials < 3 || rep.Records[0].Trials >= 1000 {
		t.Errorf("report after the interrupt (%v): %s", err, b)
	}
	if !strings.Contains(stderr.String(), "what was finished is written") {
		t.Errorf("stderr does not say what was written:\n%s", stderr.String())
	}
}

func TestBenchAndRandomModel(t *testing.T) {
	lib := testenv.Library(t).Dir
	path := filepath.Join(t.TempDir(), "random.gguf")
	r := runKvtrim(t, nil, "random-model", "--shape", "test", "-o", path)
	if r.code != 0 {
		t.Fatalf("random-model: exit %d: %s", r.code, r.stderr)
	}
	dir := t.TempDir()
	js, md := filepath.Join(dir, "b.json"), filepath.Join(dir, "b.md")
	r = runKvtrim(t, nil, "bench", "--lib", lib, "-m", path, "--prompt-tokens", "200,300", "--ratio", "0.2,0.5", "--policy", "snapkv,recent",
		"-n", "8", "--reps", "1", "--window", "8", "--json", js, "--md", md, "--png", dir)
	if r.code != 0 {
		t.Fatalf("bench: exit %d: %s", r.code, r.stderr)
	}
	var rep struct {
		Complete bool
		Reps     int
		Rows     []struct {
			Policy        string
			PromptTokens  int `json:"prompt_tokens"`
			Budget        float64
			KeptCells     int     `json:"kept_cells"`
			NKVBefore     int     `json:"n_kv_before"`
			NKVAfter      int     `json:"n_kv_after"`
			KVBytesBefore int64   `json:"kv_bytes_before"`
			KVBytesAfter  int64   `json:"kv_bytes_after"`
			PrefillMs     float64 `json:"prefill_ms"`
			StepsPct      float64 `json:"steps_pct"`
		}
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	var raw struct{ Rows []map[string]any } // the speeds, by their JSON names
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if !rep.Complete || rep.Reps != 1 || len(rep.Rows) != 2*2*2 {
		t.Fatalf("report: complete %v, %d rows:\n%s", rep.Complete, len(rep.Rows), b)
	}
	for i, row := range rep.Rows {
		speeds := map[string]float64{}
		for k, v := range raw.Rows[i] {
			if f, ok := v.(float64); ok {
				speeds[k] = f
			}
		}
		if row.KeptCells >= row.PromptTokens || row.KVBytesAfter >= row.KVBytesBefore || !(row.PrefillMs > 0) ||
			!(speeds["decode_tok_s"] > 0) || !(speeds["decode_tok_s_full"] > 0) || !(speeds["decode_tok_s_ceiling"] > 0) ||
			math.Abs(speeds["vs_ceiling"]-speeds["decode_tok_s"]/speeds["decode_tok_s_ceiling"]) > 1e-9 {
			t.Errorf("row %+v %v", row, speeds)
		}
	}
	if m, err := os.ReadFile(md); err != nil || !strings.Contains(string(m), "| t/s ceiling | vs full | vs ceiling |") {
		t.Errorf("markdown (%v):\n%s", err, m)
	}
	if _, err := os.Stat(filepath.Join(dir, "bench-decode-speed.png")); err != nil {
		t.Error(err)
	}
}

// TestBenchServe: at a fixed -c, SnapKV at 10% serves several times as many
// concurrent conversations as the full cache; every one finishes, its
// second turn finds the first cached in its slot, and the slots' second
// turns share their llama_decode calls.
func TestBenchServe(t *testing.T) {
	lib := testenv.Library(t).Dir
	js := filepath.Join(t.TempDir(), "capacity.json")
	r := runKvtrim(t, nil, "bench", "serve", "--lib", lib, "-m", testenv.ModelPath(t, "stories260K.gguf"), "-c", "4096",
		"--prompt-tokens", "1000", "-n", "8", "--window", "8", "-t", "1", "--json", js)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var rep struct {
		Rows []struct {
			Policy           string
			Slots, Succeeded int
			Generated        int     `json:"generated_tokens"`
			CachedMin        int     `json:"cached_min"`
			BatchMean        float64 `json:"sequences_per_decode"`
		}
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil || len(rep.Rows) != 2 {
		t.Fatalf("report (%v):\n%s", err, b)
	}
	full, snap := rep.Rows[0], rep.Rows[1]
	for _, row := range rep.Rows {
		if row.Succeeded != row.Slots || row.Generated != 8*row.Slots {
			t.Errorf("%s: %d of %d conversations finished, %d tokens", row.Policy, row.Succeeded, row.Slots, row.Generated)
		}
		if row.CachedMin < 1000 || row.BatchMean < 2 {
			t.Errorf("%s: a second turn found %d tokens cached; %.2f sequences per llama_decode", row.Policy, row.CachedMin, row.BatchMean)
		}
	}
	if full.Policy != "none" || snap.Policy != "snapkv" || snap.Slots < 4*full.Slots {
		t.Errorf("conversations: %s %d, %s %d", full.Policy, full.Slots, snap.Policy, snap.Slots)
	}
}

// TestBenchServeAgainst: bench serve --against runs both servers under the
// same drawn load, alternating, and reports every request answered in
// full. A script that runs kvtrim serve stands in for llama-server, which
// CI does not build; the numbers are not checked, only that each run
// served its plan.
func TestBenchServeAgainst(t *testing.T) {
	lib := testenv.Library(t).Dir
	dir := t.TempDir()
	stand := filepath.Join(dir, "llama-server")
	script := fmt.Sprintf("#!/bin/sh\nexec %q serve --lib %q \"$@\"\n", binary, lib)
	if err := os.WriteFile(stand, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	js := filepath.Join(dir, "against.json")
	r := runKvtrim(t, nil, "bench", "serve", "--against", stand, "--lib", lib, "-m", testenv.ModelPath(t, "stories260K.gguf"), "-c", "2048",
		"--clients", "3", "--requests", "2", "--prompt-range", "5,60", "--predict-range", "4,8", "--reps", "2", "--json", js,
		"--kvtrim-args", "--kv-policy snapkv --kv-budget 8")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var reps []struct {
		Runs []struct {
			Server         string
			Requests       int
			Errors         int
			CellsEvicted   float64 `json:"cells_evicted"`
			Tokens         int     `json:"generated_tokens"`
			SlotsPerDecode float64 `json:"slots_per_decode"`
			Mean           float64 `json:"mean_s"`
			Answers        []struct {
				Client, Index int
				Seconds       float64
				PromptN       int `json:"prompt_n"`
				CacheN        int `json:"cache_n"`
				PredictedN    int `json:"predicted_n"`
			}
		}
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &reps); err != nil || len(reps) != 1 || len(reps[0].Runs) != 4 {
		t.Fatalf("report (%v):\n%s", err, b)
	}
	for _, run := range reps[0].Runs {
		if run.Requests != 6 || run.Errors != 0 || run.Tokens < 6*4 || run.Tokens > 6*8 || run.SlotsPerDecode < 1 {
			t.Errorf("%s: %+v, want 6 requests answered with 4-8 tokens each", run.Server, run)
		}
		// --kvtrim-args reach kvtrim serve alone: it compresses the
		// prompts to 8 cells, the stand-in keeps them whole.
		if compressed := run.CellsEvicted > 0; compressed != (run.Server == "kvtrim") {
			t.Errorf("%s: %v cells evicted; want some for kvtrim serve alone (--kvtrim-args)", run.Server, run.CellsEvicted)
		}
		// Every request's record: each client's two, with the server's
		// timings of the prompt and of the answer.
		seen := map[[2]int]bool{}
		for _, a := range run.Answers {
			seen[[2]int{a.Client, a.Index}] = true
			if a.Seconds <= 0 || a.Seconds > run.Mean*float64(len(run.Answers)) || a.PromptN+a.CacheN < 5 || a.PromptN+a.CacheN > 61 || a.PredictedN < 4 || a.PredictedN > 8 {
				t.Errorf("%s: answer %+v, want a time and the server's timings of a 5-60 token prompt (and BOS) and 4-8 tokens", run.Server, a)
			}
		}
		if len(run.Answers) != 6 || len(seen) != 6 || run.Mean <= 0 {
			t.Errorf("%s: %d answers (%d distinct), mean %v s; want each of 3 clients' 2 requests once", run.Server, len(run.Answers), len(seen), run.Mean)
		}
	}
	if !strings.Contains(r.stdout, "| kvtrim / llama-server |") {
		t.Errorf("no ratio row in:\n%s", r.stdout)
	}
	if r := runKvtrim(t, nil, "bench", "serve", "--against", stand, "-m", "x.gguf", "-c", "2048", "--prompt-range", "60,5"); r.code != exitUsage || !strings.Contains(r.stderr, "--prompt-range") {
		t.Errorf("--prompt-range 60,5: exit %d: %s", r.code, r.stderr)
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
		"--tokens", "1500", "--segment", "500", "--configs", "streaming:4+124,window:128,dense:128/32", "--json", js, "--png", filepath.Dir(js))
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var rep struct {
		Task    string
		Configs []struct {
			Config string    `json:"config"`
			PPL    float64   `json:"ppl"`
			Seg    []float64 `json:"segment_ppl"`
			Tokens int       `json:"tokens"`
		}
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil || rep.Task != "ppl" || len(rep.Configs) != 3 {
		t.Fatalf("json: %v, %d records:\n%s", err, len(rep.Configs), b)
	}
	recs := rep.Configs
	for _, rec := range recs {
		if rec.Tokens != 1499 || len(rec.Seg) != 3 || !(rec.PPL > 1) || math.IsInf(rec.PPL, 0) {
			t.Errorf("%+v", rec)
		}
	}
	if streaming, dense := recs[0].PPL, recs[2].PPL; streaming > 1.05*dense {
		t.Errorf("streaming perplexity %.3f is more than 5%% above the dense window's %.3f", streaming, dense)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(js), "ppl-by-tokens.png")); err != nil {
		t.Error(err)
	}
	if !strings.Contains(r.stdout, "| streaming:4+124 |") {
		t.Errorf("table:\n%s", r.stdout)
	}
	bad := runKvtrim(t, nil, "eval", "ppl", "--lib", lib, "-m", model, "-f", filepath.Join(testenv.RepoRoot(), "testdata", "moby-dick-ch1-35.txt"),
		"--configs", "dense:8/16")
	wantOneLineError(t, bad, "dense:8/16", "stride")
}

// TestLibraryWithoutBackends: libllama and ggml copied without the
// backends beside them (a build with separate backends: node-llama-cpp's,
// the default one) is refused with one line saying so, not a model load
// that blames the GGUF file.
func TestLibraryWithoutBackends(t *testing.T) {
	lib := testenv.Library(t)
	dir := t.TempDir()
	for _, p := range []string{lib.LlamaPath, lib.GGMLPath, lib.GGMLBasePath} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := runKvtrim(t, nil, "run", "--lib", dir, "-m", testenv.ModelPath(t, "stories260K.gguf"), "-p", "hi", "-n", "2")
	if strings.Contains(r.stderr, "libggml-cpu") && strings.Contains(r.stderr, "cannot load") {
		t.Skip("this build links its CPU backend into libggml: there is no backend to leave out")
	}
	wantOneLineError(t, r, "no ggml backend", "libggml-cpu", "kvtrim lib fetch")
}

// copyLibs copies files into dir; when n > 0, only the first n bytes of
// each, and at most half of it (so that it is truncated however small).
func copyLibs(t *testing.T, dir string, n int, files ...string) {
	t.Helper()
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			data = data[:min(n, len(data)/2)]
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLibraryTruncated: a truncated libllama, or a truncated backend
// beside it, is refused with one line, before the dynamic loader maps it
// (which kills the process with SIGBUS).
func TestLibraryTruncated(t *testing.T) {
	lib := testenv.Library(t)
	backends, _ := filepath.Glob(filepath.Join(lib.Dir, "libggml-*.so"))
	// Every library file, under each of its names (a source build's
	// libraries find each other by their versioned names).
	all, _ := filepath.Glob(filepath.Join(lib.Dir, "lib*.so*"))
	for _, c := range []struct{ name, cut string }{{"libllama", lib.LlamaPath}, {"backend", ""}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			copyLibs(t, dir, 0, all...)
			cut := c.cut
			if cut == "" {
				if len(backends) == 0 {
					t.Skip("this build has no separate backends")
				}
				cut = backends[len(backends)-1]
			}
			copyLibs(t, dir, 1<<20, cut)
			r := runKvtrim(t, nil, "run", "--lib", dir, "-m", testenv.ModelPath(t, "stories260K.gguf"), "-p", "hi", "-n", "2")
			wantOneLineError(t, r, filepath.Base(cut), "truncated", "kvtrim lib fetch")
		})
	}
}

// TestLibraryWithMismatchedGGML: a libllama beside a libggml-base of
// another build is refused in one line naming the mismatch: older than
// the libllama, the loader finds symbols missing; newer, kvtrim finds the
// ggml version wrong.
func TestLibraryWithMismatchedGGML(t *testing.T) {
	lib := testenv.Library(t)
	dir := t.TempDir()
	// Every library file but libggml-base's, under each of its names (a
	// source build's libraries find each other by their versioned names),
	// and the other build's libggml-base under each of those.
	other, err := os.ReadFile(filepath.Join(testenv.OtherVersionLib(t), "libggml-base.so"))
	if err != nil {
		t.Fatal(err)
	}
	all, _ := filepath.Glob(filepath.Join(lib.Dir, "lib*.so*"))
	for _, p := range all {
		if strings.HasPrefix(filepath.Base(p), "libggml-base.") {
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), other, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		copyLibs(t, dir, 0, p)
	}
	r := runKvtrim(t, nil, "run", "--lib", dir, "-m", testenv.ModelPath(t, "stories260K.gguf"), "-p", "hi", "-n", "2")
	wantOneLineError(t, r, "libggml-base", "different builds", "kvtrim lib fetch")
}
