package kvtrim_test

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/internal/testenv"
)

// parityCase is one line of testdata/parity/cases.tsv: a prompt whose
// greedy continuation llama-completion recorded (testdata/parity/record.sh).
type parityCase struct {
	name, model, prompt string
	ctx, n              int
	ignoreEOS           bool
	want                string
}

// readParityCases reads the cases and the recordings of release: those of
// its own llama-completion (testdata/parity/<release>/), the default
// release's (testdata/parity/) when it has none.
func readParityCases(t *testing.T, release string) []parityCase {
	t.Helper()
	dir := filepath.Join("testdata", "parity")
	outs := dir
	if release != bindings.SupportedVersion {
		if _, err := os.Stat(filepath.Join(dir, release)); err == nil {
			outs = filepath.Join(dir, release)
		} else {
			t.Logf("no recordings of llama.cpp %s's own llama-completion: comparing with %s's", release, bindings.SupportedVersion)
		}
	}
	f, err := os.Open(filepath.Join(dir, "cases.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []parityCase
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "#") || sc.Text() == "" {
			continue
		}
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) != 6 {
			t.Fatalf("cases.tsv: bad line %q", sc.Text())
		}
		c := parityCase{name: fields[0], model: fields[1], prompt: fields[5], ignoreEOS: fields[4] == "--ignore-eos"}
		c.ctx, _ = strconv.Atoi(fields[2])
		c.n, _ = strconv.Atoi(fields[3])
		want, err := os.ReadFile(filepath.Join(outs, c.name+".out"))
		if err != nil {
			t.Fatal(err)
		}
		c.want = string(want)
		cases = append(cases, c)
	}
	if len(cases) == 0 {
		t.Fatal("cases.tsv has no cases")
	}
	return cases
}

// greedy runs a case through a Session and returns the generated text.
func greedy(t *testing.T, lib *bindings.Library, c parityCase, nBatch, nUbatch int) string {
	t.Helper()
	model, err := kvtrim.LoadModel(lib, testenv.ModelPath(t, c.model), kvtrim.ModelOptions{GPULayers: -1}, testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	s, err := model.NewSession(kvtrim.SessionOptions{NCtx: c.ctx, NBatch: nBatch, NUbatch: nUbatch, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tokens, err := s.Tokenize(c.prompt)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Prefill(context.Background(), tokens); err != nil {
		t.Fatal(err)
	}
	sampler := lib.NewSampler(bindings.SamplerOptions{Temp: 0})
	defer sampler.Close()
	var out strings.Builder
	err = s.Generate(context.Background(), sampler, kvtrim.GenerateOptions{MaxTokens: c.n, IgnoreEOS: c.ignoreEOS},
		func(_ kvtrim.Token, piece string) error { out.WriteString(piece); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// TestParityWithLlamaCompletion: at temperature 0 kvtrim generates exactly
// the text the loaded release's llama-completion generated for the same
// model, prompt, -c and -n.
func TestParityWithLlamaCompletion(t *testing.T) {
	lib := testenv.Library(t)
	for _, c := range readParityCases(t, lib.Release.Name) {
		t.Run(c.name, func(t *testing.T) {
			got := greedy(t, lib, c, 2048, 512)
			// llama-completion ends its output with newlines of its own.
			if want := strings.TrimRight(c.want, "\n"); strings.TrimRight(got, "\n") != want {
				t.Errorf("kvtrim generated\n%q\nllama-completion generated\n%q", got, want)
			}
		})
	}
}

// TestPrefillBatchingKeepsContinuation: the prompt prefilled in one batch
// and in many small ubatches gives the same greedy continuation.
func TestPrefillBatchingKeepsContinuation(t *testing.T) {
	lib := testenv.Library(t)
	for _, c := range readParityCases(t, lib.Release.Name) {
		if c.name != "long-260k" {
			continue
		}
		one := greedy(t, lib, c, 2048, 2048)
		for _, b := range [][2]int{{64, 16}, {37, 37}} {
			if got := greedy(t, lib, c, b[0], b[1]); got != one {
				t.Errorf("-b %d -ub %d generated\n%q\none batch generated\n%q", b[0], b[1], got, one)
			}
		}
		return
	}
	t.Fatal("case long-260k is missing from cases.tsv")
}
