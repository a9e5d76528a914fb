package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/internal/testenv"
)

// generated is the text and token count of a llama-server style answer:
// /completion's content, or the first choice of the OpenAI endpoints.
type generated struct {
	Content   string      `json:"content"`
	Predicted int         `json:"tokens_predicted"`
	Probs     []tokenProb `json:"completion_probabilities"`
	Choices   []struct {
		Text    string `json:"text"`
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
		Logprobs     *struct {
			Content []tokenProb `json:"content"`
		} `json:"logprobs"`
	} `json:"choices"`
	Usage struct {
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

func (g generated) text() string {
	if len(g.Choices) > 0 {
		return g.Choices[0].Text + g.Choices[0].Message.Content
	}
	return g.Content
}

func (g generated) tokens() int { return g.Predicted + g.Usage.CompletionTokens }

// probs is the answer's per-token probabilities, from either shape.
func (g generated) probs() []tokenProb {
	if len(g.Choices) > 0 && g.Choices[0].Logprobs != nil {
		return g.Choices[0].Logprobs.Content
	}
	return g.Probs
}

// sameProbs compares two answers' probabilities: the same tokens, text and
// bytes, and log-probabilities within 1e-3 (llama-server computes them in
// float32).
func sameProbs(got, want []tokenProb) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d tokens with probabilities, llama-server %d", len(got), len(want))
	}
	same := func(id1, id2 kvtrim.Token, tok1, tok2 string, b1, b2 []int, l1, l2 float64) bool {
		return id1 == id2 && tok1 == tok2 && slices.Equal(b1, b2) && math.Abs(l1-l2) < 1e-3
	}
	for i, w := range want {
		g := got[i]
		if !same(g.ID, w.ID, g.Token, w.Token, g.Bytes, w.Bytes, g.Logprob, w.Logprob) || len(g.Top) != len(w.Top) {
			return fmt.Sprintf("token %d: %+v, llama-server %+v", i, g, w)
		}
		for k, wt := range w.Top {
			gt := g.Top[k]
			if !same(gt.ID, wt.ID, gt.Token, wt.Token, gt.Bytes, wt.Bytes, gt.Logprob, wt.Logprob) {
				return fmt.Sprintf("token %d, top %d: %+v, llama-server %+v", i, k, gt, wt)
			}
		}
	}
	return ""
}

// TestMatchesLlamaServer sends the requests of testdata/serve/cases.tsv to
// the server with the full cache and compares the generated text and token
// counts with llama-server's answers of the pinned version, recorded by
// testdata/serve/record.sh.
func TestMatchesLlamaServer(t *testing.T) {
	dir := filepath.Join(testenv.RepoRoot(), "testdata", "serve")
	f, err := os.Open(filepath.Join(dir, "cases.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases [][]string
	var models []string // in order of first use
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "#") || strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		fields := strings.SplitN(sc.Text(), "\t", 4)
		if len(fields) != 4 {
			t.Fatalf("cases.tsv: %q has %d fields", sc.Text(), len(fields))
		}
		cases = append(cases, fields)
		if model := filepath.Base(fields[1]); !slices.Contains(models, model) {
			models = append(models, model)
		}
	}
	// One server at a time, each in its own subtest, so that each is
	// closed (and checked for leaks) before the next starts.
	for _, model := range models {
		t.Run(model, func(t *testing.T) {
			ts := startServerModel(t, testConfig(), model)
			for _, c := range cases {
				name, endpoint, body := c[0], c[2], c[3]
				if filepath.Base(c[1]) != model {
					continue
				}
				t.Run(name, func(t *testing.T) {
					ts.t = t // the helpers report to this subtest
					b, err := os.ReadFile(filepath.Join(dir, name+".json"))
					if err != nil {
						t.Fatal(err)
					}
					var want, got generated
					if err := json.Unmarshal(b, &want); err != nil {
						t.Fatal(err)
					}
					ts.post(endpoint, body, 200, &got)
					if got.text() != want.text() || got.tokens() != want.tokens() {
						t.Errorf("%s %s:\nkvtrim       %q (%d tokens)\nllama-server %q (%d tokens)", endpoint, body, got.text(), got.tokens(), want.text(), want.tokens())
					}
					if diff := sameProbs(got.probs(), want.probs()); diff != "" {
						t.Errorf("%s %s: %s", endpoint, body, diff)
					}
				})
			}
			ts.t = t
		})
	}
}

// TestStreamedProbs: a streamed answer's chunks carry the probabilities of
// their own tokens, and together they equal the whole answer's. (Each goes
// to a fresh slot: a reused prefix decodes the last prompt token alone,
// which moves the logits in their last digits.)
func TestStreamedProbs(t *testing.T) {
	cfg := testConfig()
	cfg.Parallel = 2
	ts := startServer(t, cfg)
	const body = `{"prompt":"Lily saw a big dog.","n_predict":12,"temperature":0,"n_probs":3%s}`
	var whole generated
	ts.post("/completion", fmt.Sprintf(body, `,"id_slot":0`), 200, &whole)
	_, b := ts.do(t.Context(), "POST", "/completion", fmt.Sprintf(body, `,"id_slot":1,"stream":true`))
	var streamed []tokenProb
	for _, ev := range sseEvents(t, b) {
		var c generated
		if err := json.Unmarshal([]byte(ev), &c); err != nil {
			t.Fatal(err)
		}
		streamed = append(streamed, c.Probs...)
	}
	if len(whole.Probs) != 12 {
		t.Fatalf("whole answer: %d tokens with probabilities, want 12", len(whole.Probs))
	}
	if diff := sameProbs(streamed, whole.Probs); diff != "" {
		t.Errorf("streamed against whole: %s", diff)
	}
}
