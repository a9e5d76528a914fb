package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/kvtrim/kvtrim"
)

// leaderboard is every policy's accuracy on several eval reports, budget
// by budget, with its compression steps as a share of prefill from a
// bench report: one table to compare policies, in the spirit of kvpress's.
type leaderboard struct {
	Tasks []leaderboardTask `json:"tasks"`
	// Bench is the bench report the overhead comes from ("" for none).
	Bench string           `json:"bench,omitempty"`
	Rows  []leaderboardRow `json:"rows"`
}

// leaderboardTask is one eval report's columns.
type leaderboardTask struct {
	Task, Model string
	Budgets     []float64
	Unit        string
}

// leaderboardRow is one policy: per task, per budget, its accuracy (-1
// where the report has none); from the bench, its compression steps'
// share of prefill and its decode speed against the full cache's (-1 when
// not benched): a decode-time policy's cost is mostly in the second.
type leaderboardRow struct {
	Policy   string      `json:"policy"`
	Accuracy [][]float64 `json:"accuracy"`
	StepsPct float64     `json:"steps_pct"`
	VsFull   float64     `json:"decode_vs_full"`
}

// cmdLeaderboard reads eval reports (--json of kvtrim eval) and a bench
// report and writes the leaderboard.
func cmdLeaderboard(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("eval leaderboard", "eval leaderboard EVAL.json... [--bench BENCH.json] [--md FILE] [--json FILE]")
	bench := fs.String("bench", "", "a kvtrim bench --json report: each policy's compression steps as a share of prefill")
	out := addOutputFlags(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageErrorf("give at least one eval report (kvtrim eval ... --json FILE)")
	}
	if err := out.check(); err != nil {
		return err
	}
	var reports []evalReport
	for _, path := range fs.Args() {
		var r evalReport
		if err := readJSON(path, &r); err != nil {
			return err
		}
		if len(r.Summary) == 0 {
			return fmt.Errorf("%s: no summary: is it a kvtrim eval --json report?", path)
		}
		reports = append(reports, r)
	}
	var b *benchReport
	if *bench != "" {
		b = &benchReport{}
		if err := readJSON(*bench, b); err != nil {
			return err
		}
	}
	lb := buildLeaderboard(reports, b)
	lb.Bench = *bench
	md := lb.markdown()
	fmt.Fprint(stdout, md)
	return out.write(lb, md, nil)
}

// readJSON decodes a JSON file into v.
func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read report: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("read report %s: %w", path, err)
	}
	return nil
}

// buildLeaderboard lays the reports' summaries out by policy, in the order
// the policies first appear, the full cache first.
func buildLeaderboard(reports []evalReport, bench *benchReport) leaderboard {
	var lb leaderboard
	var policies []string
	for _, r := range reports {
		t := leaderboardTask{Task: r.Task, Model: r.Model, Unit: r.BudgetUnit}
		for _, s := range r.Summary {
			if s.Policy != kvtrim.PolicyNone && !slices.Contains(t.Budgets, s.Budget) {
				t.Budgets = append(t.Budgets, s.Budget)
			}
			if !slices.Contains(policies, s.Policy) {
				policies = append(policies, s.Policy)
			}
		}
		slices.Sort(t.Budgets)
		lb.Tasks = append(lb.Tasks, t)
	}
	if i := slices.Index(policies, kvtrim.PolicyNone); i > 0 {
		policies = slices.Insert(slices.Delete(policies, i, i+1), 0, kvtrim.PolicyNone)
	}
	for _, p := range policies {
		row := leaderboardRow{Policy: p, StepsPct: -1, VsFull: -1}
		for i, r := range reports {
			acc := make([]float64, len(lb.Tasks[i].Budgets))
			for j, budget := range lb.Tasks[i].Budgets {
				acc[j] = -1
				for _, s := range r.Summary {
					// The full cache's one figure stands in every column.
					if s.Policy == p && (s.Budget == budget || p == kvtrim.PolicyNone) && s.Trials > 0 {
						acc[j] = float64(s.Correct) / float64(s.Trials)
					}
				}
			}
			row.Accuracy = append(row.Accuracy, acc)
		}
		if bench != nil {
			longest := -1
			for _, br := range bench.Rows {
				if br.Policy == p && br.PromptTokens > longest {
					longest, row.StepsPct, row.VsFull = br.PromptTokens, br.StepsPct, br.VsFull
				}
			}
		}
		lb.Rows = append(lb.Rows, row)
	}
	return lb
}

// markdown is the leaderboard as one table.
func (lb leaderboard) markdown() string {
	var sb strings.Builder
	for _, t := range lb.Tasks {
		fmt.Fprintf(&sb, "%s: %s\n", t.Task, t.Model)
	}
	if lb.Bench != "" {
		fmt.Fprintf(&sb, "steps: compression steps as a share of prefill, and decode speed against the full cache's, from %s\n", lb.Bench)
	}
	sb.WriteString("\n| policy |")
	rule := "|---|"
	for _, t := range lb.Tasks {
		for _, b := range t.Budgets {
			fmt.Fprintf(&sb, " %s %s |", t.Task, budgetLabel(b, t.Unit))
			rule += "---:|"
		}
	}
	if lb.Bench != "" {
		sb.WriteString(" steps % of prefill | decode vs full |")
		rule += "---:|---:|"
	}
	sb.WriteString("\n" + rule + "\n")
	for _, r := range lb.Rows {
		fmt.Fprintf(&sb, "| %s |", r.Policy)
		for _, acc := range r.Accuracy {
			for _, a := range acc {
				if a < 0 {
					sb.WriteString(" — |")
				} else {
					fmt.Fprintf(&sb, " %.0f%% |", 100*a)
				}
			}
		}
		if lb.Bench != "" {
			if r.StepsPct < 0 {
				sb.WriteString(" — | — |")
			} else {
				fmt.Fprintf(&sb, " %.1f | %.2fx |", r.StepsPct, r.VsFull)
			}
		}
		sb.WriteString("\n")
	}
	return sb.String()
}
