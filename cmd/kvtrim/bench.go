package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/internal/plot"
	"github.com/kvtrim/kvtrim/internal/progress"
)

// storyPrompt is the demo story repeated and cut to n tokens of m's
// vocabulary.
func storyPrompt(m *kvtrim.Model, n int) (string, error) {
	story := strings.TrimSpace(demoStory) + " "
	text := story
	for {
		toks, err := m.Vocab().Tokenize(text, false, false)
		if err != nil {
			return "", err
		}
		if len(toks) >= n {
			return m.Vocab().Detokenize(toks[:n-1], false, false), nil
		}
		text += story
	}
}

// benchRow is one policy at one budget on one prompt length: medians of
// the compressed runs beside the full cache's and the ceiling's.
type benchRow struct {
	Policy        string  `json:"policy"`
	PromptTokens  int     `json:"prompt_tokens"`
	Budget        float64 `json:"budget"` // a ratio of the prompt, or cells (the report's budget_unit)
	KeptCells     int     `json:"kept_cells"`
	NKVBefore     int     `json:"n_kv_before"`
	NKVAfter      int     `json:"n_kv_after"`
	KVBytesBefore int64   `json:"kv_bytes_before"`
	KVBytesAfter  int64   `json:"kv_bytes_after"`
	PrefillMsFull float64 `json:"prefill_ms_full"`
	PrefillMs     float64 `json:"prefill_ms"`
	ObserveMs     float64 `json:"observe_ms"`
	ScoreMs       float64 `json:"score_ms"`
	EvictMs       float64 `json:"evict_ms"`
	CompactMs     float64 `json:"compact_ms"`
	// StepsPct is observe + score + evict + compact as a share of the same
	// run's prefill.
	StepsPct float64 `json:"steps_pct"`
	// Decode speeds: the full cache, the compressed cache, and the ceiling
	// (llama.cpp decoding after a prompt as long as the kept cells, the
	// best compression could reach).
	DecodeTokSFull    float64 `json:"decode_tok_s_full"`
	DecodeTokS        float64 `json:"decode_tok_s"`
	DecodeTokSCeiling float64 `json:"decode_tok_s_ceiling"`
	VsFull            float64 `json:"vs_full"`
	VsCeiling         float64 `json:"vs_ceiling"`
}

// benchReport is what bench writes with --json.
type benchReport struct {
	Model      string     `json:"model"`
	Machine    machine    `json:"machine"`
	Threads    int        `json:"threads"`
	Generated  int        `json:"generated_tokens"`
	Reps       int        `json:"reps"`
	BudgetUnit string     `json:"budget_unit"`
	Complete   bool       `json:"complete"`
	Rows       []benchRow `json:"rows"`
}

// cmdBench measures, for each policy x prompt length x budget, the
// compressed cache against the full cache and against the ceiling, in
// alternating runs, and reports medians.
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "serve" {
		return cmdBenchServe(ctx, args[1:], stdout, stderr)
	}
	fs := newFlagSet("bench", "bench -m MODEL [--policy LIST] [--prompt-tokens LIST] [--ratio LIST | --budget LIST] [flags]")
	var c common
	var g genFlags
	g.registerModel(fs)
	g.registerPolicyOptions(fs)
	c.register(fs)
	fs.IntVarP(&g.nPredict, "n-predict", "n", 64, "tokens generated per run")
	policyList := fs.String("policy", "snapkv", "policies to measure (as eval's --policy)")
	lengths := fs.IntSlice("prompt-tokens", []int{2000}, "prompt lengths in tokens (the demo's story text, repeated)")
	ratios := fs.Float64Slice("ratio", nil, "budgets as shares of the prompt (default 0.1)")
	budgets := fs.IntSlice("budget", nil, "or: budgets in cells")
	reps := fs.Int("reps", 5, "runs of each configuration (the median is shown)")
	out := addOutputFlags(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if g.model == "" {
		return usageErrorf("no model: give a GGUF file with -m")
	}
	if *reps < 1 {
		return usageErrorf("--reps %d: give at least 1", *reps)
	}
	if g.nPredict < 1 {
		return usageErrorf("-n %d: give at least 1 token to decode", g.nPredict)
	}
	g.temp, g.ignoreEOS = 0, true
	plan, err := planEval(&g, *policyList, *ratios, *budgets, *lengths, []float64{0}, 1)
	if err != nil {
		return err
	}
	if err := out.check(); err != nil {
		return err
	}
	log, model, err := c.openModel(ctx, &g, stderr)
	defer c.close()
	if err != nil {
		return err
	}
	defer model.Close()
	prompts := map[int]string{}
	promptOf := func(n int) (string, error) {
		if p, ok := prompts[n]; ok {
			return p, nil
		}
		p, err := storyPrompt(model, n)
		prompts[n] = p
		return p, err
	}
	// runs[key] holds the stats of each repetition of one configuration.
	runs := map[string][]kvtrim.Stats{}
	measure := func(key string, gf genFlags, promptTokens int) error {
		prompt, err := promptOf(promptTokens)
		if err != nil {
			return err
		}
		st, err := generate(ctx, model, &gf, prompt, io.Discard, log)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		runs[key] = append(runs[key], st)
		return nil
	}
	type job struct {
		key    string
		g      genFlags
		tokens int
	}
	var jobs []job
	for _, n := range *lengths {
		jobs = append(jobs, job{fmt.Sprintf("full|%d", n), g.fullCache(), n})
		for _, b := range plan.budgets {
			kept := b.cellsFor(n)
			if kept < n {
				jobs = append(jobs, job{fmt.Sprintf("ceiling|%d", kept), g.fullCache(), kept})
			}
			for _, cfg := range plan.configs {
				if cfg.comp.Policy == kvtrim.PolicyNone {
					continue
				}
				gc := g
				gc.comp = cfg.at(n, b)
				gc.statsJSON = ""
				jobs = append(jobs, job{fmt.Sprintf("%s|%d|%g", cfg.name, n, b.value()), gc, n})
			}
		}
	}
	seen := map[string]bool{}
	jobs = slices.DeleteFunc(jobs, func(j job) bool {
		dup := seen[j.key]
		seen[j.key] = true
		return dup
	})
	rep := benchReport{Model: g.model, Machine: describeMachine(model.Library()), Threads: g.threads, Generated: g.nPredict, Reps: *reps, BudgetUnit: "ratio"}
	if len(*budgets) > 0 {
		rep.BudgetUnit = "cells"
	}
	bar := progress.New("bench", *reps*len(jobs), c.progressTerm(stderr), log)
	runErr := func() error {
		for i := range *reps {
			for _, j := range jobs {
				if err := measure(j.key, j.g, j.tokens); err != nil {
					return err
				}
				st := runs[j.key][len(runs[j.key])-1]
				bar.Step(fmt.Sprintf("rep %d: %s, decode %.0f tokens/s", i+1, j.key, st.DecodeTokS))
			}
		}
		return nil
	}()
	bar.Finish()
	rep.Complete = runErr == nil
	for _, st := range runs {
		rep.Threads = st[0].Threads
	}
	for _, n := range *lengths {
		for _, b := range plan.budgets {
			for _, cfg := range plan.configs {
				if cfg.comp.Policy == kvtrim.PolicyNone {
					continue
				}
				comp := runs[fmt.Sprintf("%s|%d|%g", cfg.name, n, b.value())]
				full := runs[fmt.Sprintf("full|%d", n)]
				if len(comp) == 0 || len(full) == 0 {
					continue
				}
				row := benchRow{Policy: cfg.name, PromptTokens: comp[0].PromptTokens, Budget: b.value(),
					KeptCells: comp[0].KeptCells, NKVBefore: comp[0].NKVBefore, NKVAfter: comp[0].NKVAfter,
					KVBytesBefore: comp[0].KVBytesBefore, KVBytesAfter: comp[0].KVBytesAfter,
					PrefillMsFull: median(full, func(s kvtrim.Stats) float64 { return s.PrefillMs }),
					PrefillMs:     median(comp, func(s kvtrim.Stats) float64 { return s.PrefillMs }),
					ObserveMs:     median(comp, func(s kvtrim.Stats) float64 { return s.ObserveMs }),
					ScoreMs:       median(comp, func(s kvtrim.Stats) float64 { return s.ScoreMs }),
					EvictMs:       median(comp, func(s kvtrim.Stats) float64 { return s.EvictMs }),
					CompactMs:     median(comp, func(s kvtrim.Stats) float64 { return s.CompactMs }),
					StepsPct: median(comp, func(s kvtrim.Stats) float64 {
						return 100 * (s.ObserveMs + s.ScoreMs + s.EvictMs + s.CompactMs) / s.PrefillMs
					}),
					DecodeTokSFull: median(full, decodeSpeed),
					DecodeTokS:     median(comp, decodeSpeed),
				}
				row.DecodeTokSCeiling = row.DecodeTokSFull // nothing evicted: the full cache is the ceiling
				if ceil := runs[fmt.Sprintf("ceiling|%d", comp[0].KeptCells)]; len(ceil) > 0 {
					row.DecodeTokSCeiling = median(ceil, decodeSpeed)
				}
				row.VsFull = row.DecodeTokS / row.DecodeTokSFull
				row.VsCeiling = row.DecodeTokS / row.DecodeTokSCeiling
				rep.Rows = append(rep.Rows, row)
			}
		}
	}
	md := rep.markdown()
	fmt.Fprint(stdout, md)
	if err := out.write(rep, md, rep.pictures); err != nil {
		return errors.Join(runErr, err)
	}
	if runErr != nil {
		log.Warn().Msg("stopped: what was finished is written (complete: false)")
	}
	return runErr
}

func decodeSpeed(s kvtrim.Stats) float64 { return s.DecodeTokS }

// median is the median of f over the runs.
func median(runs []kvtrim.Stats, f func(kvtrim.Stats) float64) float64 {
	v := make([]float64, len(runs))
	for i, s := range runs {
		v[i] = f(s)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// markdown is the report as a table like llama-bench's.
func (r benchReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s; %s; %d threads, %d tokens generated, median of %d runs\n\n", r.Model, r.Machine, r.Threads, r.Generated, r.Reps)
	if !r.Complete {
		b.WriteString("**Interrupted**: medians of the runs finished.\n\n")
	}
	b.WriteString("| policy | prompt | budget | kept | n_kv | KV MiB | prefill ms | steps ms | steps % | t/s full | t/s compressed | t/s ceiling | vs full | vs ceiling |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "| %s | %d | %s | %d | %d -> %d | %.2f -> %.2f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f |\n",
			row.Policy, row.PromptTokens, budgetLabel(row.Budget, r.BudgetUnit), row.KeptCells, row.NKVBefore, row.NKVAfter,
			float64(row.KVBytesBefore)/(1<<20), float64(row.KVBytesAfter)/(1<<20), row.PrefillMs,
			row.ObserveMs+row.ScoreMs+row.EvictMs+row.CompactMs, row.StepsPct,
			row.DecodeTokSFull, row.DecodeTokS, row.DecodeTokSCeiling, row.VsFull, row.VsCeiling)
	}
	return b.String()
}

// pictures draws decode speed against prompt length: the full cache, each
// policy and budget, and each budget's ceiling dashed.
func (r benchReport) pictures(dir string) error {
	if len(r.Rows) == 0 {
		return nil
	}
	series := map[string]*plot.Series{}
	var names []string
	point := func(name string, dashed bool, x, y float64) {
		s := series[name]
		if s == nil {
			s = &plot.Series{Name: name, Dashed: dashed}
			series[name] = s
			names = append(names, name)
		}
		if !slices.Contains(s.X, x) {
			s.X, s.Y = append(s.X, x), append(s.Y, y)
		}
	}
	for _, row := range r.Rows {
		x := float64(row.PromptTokens)
		label := budgetLabel(row.Budget, r.BudgetUnit)
		point("full cache", false, x, row.DecodeTokSFull)
		point(row.Policy+" "+label, false, x, row.DecodeTokS)
		point("ceiling "+label, true, x, row.DecodeTokSCeiling)
	}
	var all []plot.Series
	for _, n := range names {
		all = append(all, *series[n])
	}
	return plot.Lines(filepath.Join(dir, "bench-decode-speed.png"), plot.Chart{
		Title: "decode speed after prefill", XLabel: "prompt length (tokens)", YLabel: "decode tokens/s", Series: all,
	})
}
