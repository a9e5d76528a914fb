package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/internal/progress"
	"github.com/kvtrim/kvtrim/internal/tasks"
)

// evalConfig is one policy of an evaluation, with its options.
type evalConfig struct {
	name string
	comp kvtrim.Compression
}

// parseConfigs reads "none,recent,snapkv:normsum,snapkv:max:maxpool,
// snapkv+h2o,snapkv@512/knorm,streaming,...": a policy, optionally "+" a
// decode policy, optionally ":" an aggregation and ":" a pooling (avgpool
// or maxpool), optionally "@" a prefill chunk (-1: one go) and "/" a chunk
// policy, so that SnapKV's ablations sit beside each other in one run.
func parseConfigs(list string, base kvtrim.Compression) ([]evalConfig, error) {
	var out []evalConfig
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		spec, chunking, chunked := strings.Cut(item, "@")
		policy, options, _ := strings.Cut(spec, ":")
		policy, decode, _ := strings.Cut(policy, "+")
		agg, pool, _ := strings.Cut(options, ":")
		c := base
		c.Policy, c.DecodePolicy = policy, decode
		if agg != "" {
			c.Aggregate = agg
		}
		if pool != "" {
			if c.Pool, _ = strings.CutSuffix(pool, "pool"); c.Pool == pool {
				return nil, usageErrorf("--policy %q: the pooling is avgpool or maxpool", item)
			}
		}
		if chunked {
			size, chunkPolicy, _ := strings.Cut(chunking, "/")
			var err error
			if c.Chunk, err = strconv.Atoi(size); err != nil {
				return nil, usageErrorf("--policy %q: the chunk after @ is a number of tokens (-1: none)", item)
			}
			if chunkPolicy != "" {
				c.ChunkPolicy = chunkPolicy
			}
		}
		if policy == kvtrim.PolicyNone {
			c = kvtrim.Compression{Policy: policy}
		}
		if policy == "" {
			return nil, usageErrorf("--policy %q: empty policy", list)
		}
		cfg := evalConfig{item, c}
		if err := cfg.at(1000, evalBudget{ratio: 0.1}).Check(); err != nil {
			return nil, usageErrorf("--policy %q: %v", item, err)
		}
		out = append(out, cfg)
	}
	return out, nil
}

// check reports whether the configuration can run at budget b on prompts
// of n tokens: the budget must hold more than SnapKV's window (checked
// here, before any work, rather than at the first prompt).
func (c evalConfig) check(n int, b evalBudget) error {
	comp := c.at(n, b)
	if err := comp.Check(); err != nil {
		return err
	}
	cells := b.cellsFor(n)
	if comp.KeepsWindow() && cells < n && cells <= comp.WindowFor(cells) {
		return fmt.Errorf("%d cells do not hold more than the window of %d (lower --window)", cells, comp.WindowFor(cells))
	}
	return nil
}

// at is the configuration's compression at budget b for a prompt of n
// tokens. Where a decode-time policy counts in parts and none are given,
// the budget (cells, or a ratio of n) is split as its paper does
// (Compression.Fit): StreamingLLM keeps 4 sinks and the rest recent, H2O
// half heavy hitters and half recent. Counts given on the command line
// are kept.
func (c evalConfig) at(n int, b evalBudget) kvtrim.Compression {
	comp := c.comp
	if comp.Policy == kvtrim.PolicyNone {
		return comp
	}
	comp.Budget, comp.Ratio = b.cells, b.ratio
	return comp.Fit(b.cellsFor(n))
}

// evalBudget is one budget of an eval's list: cells, or a ratio of each
// prompt's length.
type evalBudget struct {
	cells int
	ratio float64
}

// value is the budget as the JSON records hold it.
func (b evalBudget) value() float64 {
	if b.cells > 0 {
		return float64(b.cells)
	}
	return b.ratio
}

// cellsFor is the budget in cells for a prompt of n tokens.
func (b evalBudget) cellsFor(n int) int {
	return kvtrim.Compression{Budget: b.cells, Ratio: b.ratio}.BudgetFor(n)
}

func (b evalBudget) String() string {
	if b.cells > 0 {
		return fmt.Sprintf("%d cells", b.cells)
	}
	return fmt.Sprintf("%g%%", 100*b.ratio)
}

// evalRecord is the result of one policy at one budget in one grid cell.
type evalRecord struct {
	Policy string `json:"policy"`
	// Budget is a ratio of the prompt or a number of cells (the report's
	// budget_unit); 0 for none, the full cache.
	Budget   float64 `json:"budget"`
	Length   int     `json:"length"`
	Depth    float64 `json:"depth"`
	Lines    int     `json:"lines,omitempty"`
	Trials   int     `json:"trials"`
	Correct  int     `json:"correct"`
	Accuracy float64 `json:"accuracy"`
	// SameAsFull counts the answers equal to the full cache's (the measure
	// on a task the model has not learnt).
	SameAsFull int     `json:"same_as_full"`
	Agreement  float64 `json:"agreement"`
}

// evalSummary is one policy at one budget over the whole grid.
type evalSummary struct {
	Policy     string  `json:"policy"`
	Budget     float64 `json:"budget"`
	Trials     int     `json:"trials"`
	Correct    int     `json:"correct"`
	Accuracy   float64 `json:"accuracy"`
	SameAsFull int     `json:"same_as_full"`
	Agreement  float64 `json:"agreement"`
}

// evalReport is what eval passkey|lines writes with --json.
type evalReport struct {
	Task       string        `json:"task"`
	Model      string        `json:"model"`
	Machine    machine       `json:"machine"`
	Settings   evalSettings  `json:"settings"`
	BudgetUnit string        `json:"budget_unit"` // "ratio" or "cells"
	Lengths    []int         `json:"lengths"`
	Lines      []int         `json:"lines,omitempty"` // lines task: the keyed lines at each length
	Depths     []float64     `json:"depths"`
	Trials     int           `json:"trials_per_cell"`
	Seed       uint64        `json:"seed"`
	Complete   bool          `json:"complete"` // false when interrupted
	Seconds    float64       `json:"seconds"`
	Records    []evalRecord  `json:"records"`
	Summary    []evalSummary `json:"summary"`
	budgets    []evalBudget  // in list order
	cells      map[string]*evalRecord
	order      []string // record keys in first-seen order
	configs    []evalConfig
}

// evalSettings are the compression settings every policy of a run shares.
type evalSettings struct {
	Window    int    `json:"window"`
	Lookahead int    `json:"lookahead"`
	Kernel    int    `json:"kernel"`
	Pool      string `json:"pool"`
	Aggregate string `json:"aggregate"`
	FlashAttn string `json:"flash_attn"`
	Threads   int    `json:"threads"`
}

// cellKey names a policy at a budget in a grid cell, for evalReport.cells.
func cellKey(policy string, budget float64, length int, depth float64) string {
	return fmt.Sprintf("%s|%g|%d|%g", policy, budget, length, depth)
}

// add counts one answer of policy at budget in a grid cell.
func (r *evalReport) add(policy string, budget float64, length int, depth float64, lines int, correct, same bool) {
	key := cellKey(policy, budget, length, depth)
	rec := r.cells[key]
	if rec == nil {
		rec = &evalRecord{Policy: policy, Budget: budget, Length: length, Depth: depth, Lines: lines}
		r.cells[key] = rec
		r.order = append(r.order, key)
	}
	rec.Trials++
	if correct {
		rec.Correct++
	}
	if same {
		rec.SameAsFull++
	}
}

// finish fills Records and Summary from the counts.
func (r *evalReport) finish() {
	r.Records = r.Records[:0]
	r.Summary = r.Summary[:0]
	sums := map[string]*evalSummary{}
	var keys []string
	for _, key := range r.order {
		rec := *r.cells[key]
		rec.Accuracy = float64(rec.Correct) / float64(rec.Trials)
		rec.Agreement = float64(rec.SameAsFull) / float64(rec.Trials)
		r.Records = append(r.Records, rec)
		sk := fmt.Sprintf("%s|%g", rec.Policy, rec.Budget)
		sum := sums[sk]
		if sum == nil {
			sum = &evalSummary{Policy: rec.Policy, Budget: rec.Budget}
			sums[sk] = sum
			keys = append(keys, sk)
		}
		sum.Trials += rec.Trials
		sum.Correct += rec.Correct
		sum.SameAsFull += rec.SameAsFull
	}
	for _, k := range keys {
		s := *sums[k]
		s.Accuracy = float64(s.Correct) / float64(s.Trials)
		s.Agreement = float64(s.SameAsFull) / float64(s.Trials)
		r.Summary = append(r.Summary, s)
	}
}

// cmdEval runs a retrieval task over a grid of lengths and depths for each
// policy and budget, and reports accuracy (and agreement with the full
// cache) as markdown tables, and with --json, --md and --png as a JSON
// report, a markdown file and pictures.
func cmdEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "ppl" {
		return cmdEvalPPL(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "leaderboard" {
		return cmdLeaderboard(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || (args[0] != "passkey" && args[0] != "lines" && args[0] != "recall") {
		return usageErrorf("eval needs a task: passkey, lines, recall or ppl (or leaderboard, of their reports)")
	}
	task := args[0]
	fs := newFlagSet("eval "+task, "eval passkey|lines|recall -m MODEL [--policy LIST] [--ratio LIST | --budget LIST] [flags]")
	var c common
	var g genFlags
	g.registerModel(fs)
	g.registerPolicyOptions(fs)
	c.register(fs)
	fs.Set("ctx-size", "2048")
	policyList := fs.String("policy", "none,recent,snapkv", "policies to compare: "+strings.Join(kvtrim.PolicyNames(), ", ")+"; snapkv+h2o or snapkv+streaming for a decode policy; snapkv:AGG for an aggregation; snapkv@CHUNK or snapkv@CHUNK/POLICY for a chunked prefill")
	fs.StringVar(policyList, "configs", "none,recent,snapkv", "the same as --policy")
	fs.MarkHidden("configs")
	ratios := fs.Float64Slice("ratio", nil, "budgets as shares of each prompt, in (0, 1] (default 0.1)")
	budgets := fs.IntSlice("budget", nil, "or: budgets in cells")
	lengths := fs.IntSlice("lengths", []int{256, 512, 1024}, "prompt lengths in tokens")
	depths := fs.Float64Slice("depths", []float64{0.1, 0.5, 0.9}, "needle depths (0: start, 1: end)")
	trials := fs.Int("trials", 10, "prompts per grid cell")
	lineCounts := fs.IntSlice("lines", nil, "lines: how many keyed lines each prompt holds, one count per --lengths entry (default: RETRIEVAL.md's 3, 4, 6 at 256, 512, 1024 tokens)")
	seed := fs.Uint64("seed", 1, "seed of the prompts (and of the random policy)")
	fs.Uint64Var(seed, "eval-seed", 1, "the same as --seed")
	fs.MarkHidden("eval-seed")
	strict := fs.Bool("strict", false, "refuse lengths past the model's training context instead of warning")
	chat := fs.Bool("chat", false, "wrap each task prompt in the model's chat template (as the user's message)")
	recallFile := fs.String("prompts", "", "recall: the prompt set, one JSON object per line (default: recall/public.jsonl beside the model, RECALL.md's public set)")
	formatFile := fs.String("prompt-format", "", "or: a file whose text holds {prompt} where each task prompt goes (default: the bare prompt, the retrieval model's format)")
	out := addOutputFlags(fs)
	if err := parseFlags(fs, args[1:], stderr); err != nil {
		return err
	}
	if g.model == "" {
		return usageErrorf("no model: give a GGUF file with -m")
	}
	var recalls []tasks.Recall
	if task == "recall" {
		if *recallFile == "" {
			*recallFile = filepath.Join(filepath.Dir(g.model), "recall", "public.jsonl")
		}
		var err error
		if recalls, err = tasks.ReadRecall(*recallFile); err != nil {
			return usageErrorf("%v (give the set with --prompts)", err)
		}
		*lengths, *depths = recallLengths(recalls), []float64{0}
		*trials = len(recalls)
	} else if *recallFile != "" {
		return usageErrorf("--prompts is for the recall task")
	}
	plan, err := planEval(&g, *policyList, *ratios, *budgets, *lengths, *depths, *trials)
	if err != nil {
		return err
	}
	format := "{prompt}"
	if *formatFile != "" {
		if *chat {
			return usageErrorf("give --chat or --prompt-format, not both")
		}
		b, err := os.ReadFile(*formatFile)
		if err != nil {
			return usageErrorf("--prompt-format: %v", err)
		}
		if format = string(b); !strings.Contains(format, "{prompt}") {
			return usageErrorf("--prompt-format %s has no {prompt} where the task's prompt goes", *formatFile)
		}
	}
	if err := out.check(); err != nil {
		return err
	}
	linesAt := map[int]int{}
	switch {
	case len(*lineCounts) > 0 && task != "lines":
		return usageErrorf("--lines is for the lines task")
	case len(*lineCounts) > 0 && len(*lineCounts) != len(*lengths):
		return usageErrorf("--lines gives %d counts for %d lengths: give one per length", len(*lineCounts), len(*lengths))
	}
	for i, l := range *lengths {
		linesAt[l] = defaultLines(l)
		if len(*lineCounts) > 0 {
			if k := (*lineCounts)[i]; k < 2 || k*48 > l {
				return usageErrorf("--lines %d at %d tokens: give at least 2 lines, and at most one per 48 tokens", k, l)
			}
			linesAt[l] = (*lineCounts)[i]
		}
	}
	log, model, err := c.openModel(ctx, &g, stderr)
	defer c.close()
	if err != nil {
		return err
	}
	defer model.Close()
	if long := slices.Max(*lengths); long > model.NCtxTrain() {
		msg := fmt.Sprintf("length %d is past the model's training context of %d tokens", long, model.NCtxTrain())
		if *strict {
			return usageErrorf("%s (--strict)", msg)
		}
		log.Warn().Msg(msg + ": expect failures there")
	}
	longest := slices.Max(*lengths) + 16
	if task == "recall" {
		longest = 0
		for _, p := range recalls {
			longest = max(longest, p.Tokens+p.Predict())
		}
	}
	if longest > g.nCtx && g.nCtx > 0 {
		return usageErrorf("prompts of %d tokens and their answers do not fit -c %d: raise -c", longest, g.nCtx)
	}
	if *chat {
		if model.ChatTemplate() == "" {
			return usageErrorf("--chat: %s has no chat template; give --prompt-format FILE instead", g.model)
		}
	}
	wrap := func(text string) (string, error) {
		if *chat {
			return model.ApplyChatTemplate("", []bindings.ChatMessage{{Role: "user", Content: text}}, true)
		}
		return strings.Replace(format, "{prompt}", text, 1), nil
	}
	threads := max(g.threads, 0)
	rep := &evalReport{
		Task: task, Model: g.model, Machine: describeMachine(model.Library()),
		Settings: evalSettings{Window: g.comp.Window, Lookahead: max(0, g.comp.Lookahead), Kernel: g.comp.Kernel, Pool: g.comp.Pool,
			Aggregate: g.comp.Aggregate, FlashAttn: g.flashAttn, Threads: threads},
		BudgetUnit: "ratio", Lengths: *lengths, Depths: *depths, Trials: *trials, Seed: *seed,
		budgets: plan.budgets, cells: map[string]*evalRecord{}, configs: plan.configs,
	}
	if len(*budgets) > 0 {
		rep.BudgetUnit = "cells"
	}
	if task == "lines" {
		for _, l := range *lengths {
			rep.Lines = append(rep.Lines, linesAt[l])
		}
	}
	r := rand.New(rand.NewPCG(*seed, 0x6b767472696d))
	start := time.Now()
	steps := len(*lengths) * len(*depths) * *trials
	if task == "recall" {
		steps = len(recalls)
	}
	bar := progress.New(task, steps, c.progressTerm(stderr), log)
	// compare runs one prompt under the full cache and every policy and
	// budget, and counts the answers in the grid cell (length, depth).
	compare := func(text string, length int, depth float64, lines int, predict int, correct func(string) bool, answer func(string) string) error {
		text, err := wrap(text)
		if err != nil {
			return err
		}
		g := g
		g.nPredict = predict
		full, err := evalOne(ctx, model, kvtrim.Compression{}, text, g, threads)
		if err != nil {
			return fmt.Errorf("none, %d tokens, depth %g: %w", length, depth, err)
		}
		for _, cfg := range plan.configs {
			if cfg.comp.Policy == kvtrim.PolicyNone {
				rep.add(cfg.name, 0, length, depth, lines, correct(full), true)
				continue
			}
			for _, b := range plan.budgets {
				comp := cfg.at(length, b)
				comp.Seed = *seed
				got, err := evalOne(ctx, model, comp, text, g, threads)
				if err != nil {
					return fmt.Errorf("%s at %s, %d tokens, depth %g: %w", cfg.name, b, length, depth, err)
				}
				rep.add(cfg.name, b.value(), length, depth, lines, correct(got), answer(got) == answer(full))
			}
		}
		return nil
	}
	runErr := func() error {
		if task == "recall" {
			for _, p := range recalls {
				if err := compare(p.Text, recallLength(p.Tokens), 0, 0, p.Predict(), p.Correct, recallAnswer); err != nil {
					return err
				}
				bar.Step(fmt.Sprintf("%d tokens, %d questions", p.Tokens, p.Questions()))
			}
			return nil
		}
		for _, length := range *lengths {
			for _, depth := range *depths {
				for range *trials {
					p := tasks.Passkey(r, length, depth)
					lines := 0
					if task == "lines" {
						lines = linesAt[length]
						p = tasks.Lines(r, length, lines, depth)
					}
					if err := compare(p.Text, length, depth, lines, 8, p.Correct, answerOf); err != nil {
						return err
					}
					bar.Step(fmt.Sprintf("%d tokens @%.0f%%", length, 100*depth))
				}
			}
		}
		return nil
	}()
	bar.Finish()
	rep.Seconds = time.Since(start).Seconds()
	rep.Complete = runErr == nil
	rep.finish()
	if len(rep.Records) == 0 {
		return runErr
	}
	md := rep.markdown()
	fmt.Fprint(stdout, md)
	if err := out.write(rep, md, rep.pictures); err != nil {
		return errors.Join(runErr, err)
	}
	if runErr != nil {
		log.Warn().Msgf("stopped after %.0f s: what was finished is written (complete: false)", rep.Seconds)
		return runErr
	}
	return nil
}

// recallAnswer is a recall answer's words (tasks.AnswerWords), joined.
func recallAnswer(out string) string { return strings.Join(tasks.AnswerWords(out), " ") }

// recallLength is the length a recall prompt of n tokens is counted
// under: the nearest of the sets' 512, 1024 and 2048.
func recallLength(n int) int {
	best := 512
	for _, l := range []int{1024, 2048} {
		if abs(n-l) < abs(n-best) {
			best = l
		}
	}
	return best
}

func abs(x int) int { return max(x, -x) }

// recallLengths are the lengths a recall set's prompts are counted under,
// ascending.
func recallLengths(set []tasks.Recall) []int {
	var out []int
	for _, p := range set {
		if l := recallLength(p.Tokens); !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// defaultLines is the number of keyed lines in a lines prompt of length
// tokens: the retrieval model's evaluation's 3, 4 and 6 at 256, 512 and
// 1024 tokens (RETRIEVAL.md), about one per 170 tokens beyond.
func defaultLines(length int) int {
	switch {
	case length <= 256:
		return 3
	case length <= 512:
		return 4
	case length <= 1024:
		return 6
	}
	return length / 170
}

// evalPlan is an eval's policies and budgets, checked against every length
// before any work starts.
type evalPlan struct {
	configs []evalConfig
	budgets []evalBudget
}

// planEval checks the grid and the budget lists.
func planEval(g *genFlags, policyList string, ratios []float64, cells []int, lengths []int, depths []float64, trials int) (evalPlan, error) {
	switch {
	case len(lengths) == 0 || len(depths) == 0:
		return evalPlan{}, usageErrorf("empty grid: give --lengths and --depths")
	case trials < 1:
		return evalPlan{}, usageErrorf("--trials %d: give at least 1", trials)
	case len(ratios) > 0 && len(cells) > 0:
		return evalPlan{}, usageErrorf("give --ratio or --budget, not both")
	}
	for _, l := range lengths {
		if l < 64 {
			return evalPlan{}, usageErrorf("prompt length %d: give at least 64 tokens", l)
		}
	}
	for _, d := range depths {
		if !(d >= 0 && d <= 1) {
			return evalPlan{}, usageErrorf("--depths %g: give depths in [0, 1]", d)
		}
	}
	if len(ratios) == 0 && len(cells) == 0 {
		ratios = []float64{0.1}
	}
	var plan evalPlan
	for _, r := range ratios {
		if !(r > 0 && r <= 1) {
			return plan, usageErrorf("--ratio %g: give shares in (0, 1]", r)
		}
		plan.budgets = append(plan.budgets, evalBudget{ratio: r})
	}
	for _, n := range cells {
		if n < 2 {
			return plan, usageErrorf("--budget %d: give at least 2 cells", n)
		}
		plan.budgets = append(plan.budgets, evalBudget{cells: n})
	}
	g.comp.Policy, g.comp.Ratio, g.comp.Budget = "none", 0, 0
	if err := g.validate(); err != nil {
		return plan, err
	}
	var err error
	if plan.configs, err = parseConfigs(policyList, g.comp); err != nil {
		return plan, err
	}
	for _, cfg := range plan.configs {
		for _, b := range plan.budgets {
			for _, l := range lengths {
				if err := cfg.check(l, b); err != nil {
					return plan, usageErrorf("--policy %s at a budget of %s of %d tokens: %v", cfg.name, b, l, err)
				}
			}
		}
	}
	return plan, nil
}

// answerOf is the first word of a generated answer.
func answerOf(out string) string {
	f := strings.Fields(out)
	if len(f) == 0 {
		return ""
	}
	return strings.TrimRight(f[0], ".")
}

func evalOne(ctx context.Context, model *kvtrim.Model, comp kvtrim.Compression, prompt string, g genFlags, threads int) (string, error) {
	s, err := model.NewSession(kvtrim.SessionOptions{NCtx: g.nCtx, NBatch: g.nBatch, NUbatch: g.nUbat, Threads: threads, FlashAttn: g.flashAttn, Compression: comp})
	if err != nil {
		return "", err
	}
	defer s.Close()
	toks, err := s.Tokenize(prompt)
	if err != nil {
		return "", err
	}
	if err := s.Prefill(ctx, toks); err != nil {
		return "", err
	}
	sampler := model.Library().NewSampler(bindings.SamplerOptions{Temp: 0})
	defer sampler.Close()
	var out strings.Builder
	err = s.Generate(ctx, sampler, kvtrim.GenerateOptions{MaxTokens: g.nPredict},
		func(_ kvtrim.Token, piece string) error { out.WriteString(piece); return nil })
	return out.String(), err
}
