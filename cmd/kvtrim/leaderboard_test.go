package main

import (
	"strings"
	"testing"
)

// TestLeaderboard: policies in first-seen order with the full cache
// first, accuracy per task and budget (the full cache's one figure in
// every column, a dash where a policy was not run), the bench's longest
// prompt's steps and decode speed, and a dash where it was not benched.
func TestLeaderboard(t *testing.T) {
	passkey := evalReport{Task: "passkey", Model: "r.gguf", BudgetUnit: "ratio", Summary: []evalSummary{
		{Policy: "snapkv", Budget: 0.1, Trials: 10, Correct: 9},
		{Policy: "none", Budget: 0, Trials: 10, Correct: 10},
		{Policy: "snapkv", Budget: 0.05, Trials: 10, Correct: 5},
		{Policy: "tova", Budget: 0.1, Trials: 10, Correct: 1},
	}}
	recall := evalReport{Task: "recall", Model: "q.gguf", BudgetUnit: "ratio", Summary: []evalSummary{
		{Policy: "snapkv", Budget: 0.2, Trials: 4, Correct: 3},
	}}
	bench := benchReport{Rows: []benchRow{
		{Policy: "snapkv", PromptTokens: 1000, StepsPct: 9, VsFull: 1.1},
		{Policy: "snapkv", PromptTokens: 2000, StepsPct: 5.25, VsFull: 1.5},
	}}
	lb := buildLeaderboard([]evalReport{passkey, recall}, &bench)
	lb.Bench = "b.json"
	md := lb.markdown()
	for _, want := range []string{
		"| policy | passkey 5% | passkey 10% | recall 20% | steps % of prefill | decode vs full |",
		"| none | 100% | 100% | — | — | — |",
		"| snapkv | 50% | 90% | 75% | 5.2 | 1.50x |",
		"| tova | — | 10% | — | — | — |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("leaderboard lacks %q:\n%s", want, md)
		}
	}
	if strings.Index(md, "| none |") > strings.Index(md, "| snapkv |") {
		t.Errorf("the full cache is not first:\n%s", md)
	}
}
