package tasks

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"unicode"
)

// Recall is one prompt of the multi-question recall model's sets
// (../shared/models/RECALL.md): facts "Code: KEY VAL." through filler, and
// a question asking for K of them, answered " K1 V1, K2 V2." in order.
type Recall struct {
	Text    string   `json:"prompt"`
	Keys    []string `json:"keys"`
	Answers []string `json:"answers"`
	Tokens  int      `json:"n_tokens"`
	Depth   float64  `json:"depth"`
	// Expected is the whole expected continuation, when the set has it.
	Expected string `json:"expected"`
}

// Questions is how many facts the prompt asks for.
func (r Recall) Questions() int { return len(r.Keys) }

// Predict is the tokens an answer takes: a key, a value and a comma or
// full stop for each question (RECALL.md's n_predict).
func (r Recall) Predict() int { return 3 * len(r.Keys) }

// Correct reports whether generated text answers every question: its i-th
// "KEY VAL" pair is the i-th asked key and its value, punctuation aside.
func (r Recall) Correct(generated string) bool {
	words := AnswerWords(generated)
	if len(words) < 2*len(r.Keys) {
		return false
	}
	for i, k := range r.Keys {
		if words[2*i] != k || words[2*i+1] != r.Answers[i] {
			return false
		}
	}
	return true
}

// AnswerWords is a recall answer's words, punctuation aside: what scoring
// compares, and what two answers must share to be the same.
func AnswerWords(generated string) []string {
	return strings.FieldsFunc(generated, func(c rune) bool { return unicode.IsSpace(c) || unicode.IsPunct(c) })
}

// ReadRecall reads a recall prompt set: one JSON object per line, with at
// least the prompt, its keys and their answers.
func ReadRecall(path string) ([]Recall, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("recall prompts: %w", err)
	}
	defer f.Close()
	var out []Recall
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; sc.Scan(); line++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r Recall
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("recall prompts %s line %d: %w", path, line, err)
		}
		if r.Text == "" || len(r.Keys) == 0 || len(r.Keys) != len(r.Answers) {
			return nil, fmt.Errorf("recall prompts %s line %d: want a prompt and as many answers as keys", path, line)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("recall prompts %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("recall prompts %s: no prompts", path)
	}
	return out, nil
}
