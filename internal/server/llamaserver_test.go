package server

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim/internal/testenv"
)

// generated is the text and token count of a llama-server style answer:
// /completion's content, or the first choice of the OpenAI endpoints.
type generated struct {
	Content   string `json:"content"`
	Predicted int    `json:"tokens_predicted"`
	Choices   []struct {
		Text    string `json:"text"`
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
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
	servers := map[string]*testServer{}
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
		if model := filepath.Base(fields[1]); servers[model] == nil {
			servers[model] = startServerModel(t, testConfig(), model)
		}
	}
	for _, c := range cases {
		name, ts, endpoint, body := c[0], servers[filepath.Base(c[1])], c[2], c[3]
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
		})
	}
}
