package reasoning

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kvtrim/kvtrim/internal/testenv"
)

// TestDetect finds the tags in the pinned source's templates of thinking
// models, and none in others'.
func TestDetect(t *testing.T) {
	dir := filepath.Join(testenv.LlamaSource(t), "models", "templates")
	for name, want := range map[string]string{
		"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": "<think>",
		"Qwen-QwQ-32B":    "<think>",
		"Qwen-Qwen3-0.6B": "<think>",
		"CohereForAI-c4ai-command-r7b-12-2024-tool_use": "<|START_THINKING|>",
		"meta-llama-Llama-3.3-70B-Instruct":             "",
		"mistralai-Mistral-Nemo-Instruct-2407":          "",
	} {
		src, err := os.ReadFile(filepath.Join(dir, name+".jinja"))
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if tags := Detect(string(src)); tags != nil {
			got = tags.Start
		}
		if got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

// TestSplit reads whole answers and streamed ones, split at every byte,
// to the same reasoning and content.
func TestSplit(t *testing.T) {
	think := &Tags{"<think>", "</think>"}
	for _, c := range []struct {
		text               string
		open               bool
		reasoning, content string
	}{
		{"<think>\nLet me see.\n</think>\n\nIt is 4.", false, "Let me see.", "It is 4."},
		{"Let me see.</think>It is 4.", true, "Let me see.", "It is 4."},
		{"It is 4, no <think> here.", false, "", "It is 4, no <think> here."},
		{"  <think>hm</think>ok", false, "hm", "ok"},
		{"<think>never done", false, "never done", ""},
		{"still thinking </thi", true, "still thinking </thi", ""},
		{"<thin", false, "", "<thin"},
		{"", true, "", ""},
	} {
		r, got := think.Split(c.text, c.open)
		if r != c.reasoning || got != c.content {
			t.Errorf("%q (open %v): %q %q, want %q %q", c.text, c.open, r, got, c.reasoning, c.content)
		}
		s := think.NewStream(c.open)
		var sr, sc string
		for i := range len(c.text) {
			r, cc := s.Write(c.text[i : i+1])
			sr, sc = sr+r, sc+cc
		}
		r, cc := s.Finish()
		sr, sc = sr+r, sc+cc
		if trimmed := trimSpace(sr); trimmed != c.reasoning || sc != c.content {
			t.Errorf("%q streamed byte by byte: %q %q, want %q %q", c.text, sr, sc, c.reasoning, c.content)
		}
	}
}

// trimSpace trims the spaces and newlines Split trims from reasoning.
func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\n') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\n') {
		s = s[:len(s)-1]
	}
	return s
}
