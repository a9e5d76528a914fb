package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/internal/tasks"
)

// evalConfig is one column of an evaluation: a policy and its aggregation.
type evalConfig struct {
	name string
	comp kvtrim.Compression
}

// parseConfigs reads "none,recent,snapkv:normsum,snapkv+h2o,streaming,...":
// a policy, optionally "+" a decode policy, optionally ":" an aggregation.
func parseConfigs(list string, base kvtrim.Compression) ([]evalConfig, error) {
	var out []evalConfig
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		policy, agg, _ := strings.Cut(item, ":")
		policy, decode, _ := strings.Cut(policy, "+")
		c := base
		c.Policy, c.DecodePolicy = policy, decode
		if agg != "" {
			c.Aggregate = agg
		}
		if policy == kvtrim.PolicyNone {
			c = kvtrim.Compression{Policy: policy}
		}
		cfg := evalConfig{item, c}
		if err := cfg.at(1000).Check(); err != nil {
			return nil, usageErrorf("--configs %q: %v", item, err)
		}
		out = append(out, cfg)
	}
	return out, nil
}

// at is the configuration's compression for a prompt of n tokens. The
// budget (--budget, or --ratio of n) is split as the papers do where the
// policy counts in parts: StreamingLLM keeps 4 sinks and the rest recent,
// H2O as a decode policy half heavy hitters and half recent. Counts given
// on the command line are kept.
func (c evalConfig) at(n int) kvtrim.Compression {
	comp := c.comp
	budget := comp.Budget
	if budget == 0 {
		budget = int(math.Ceil(comp.Ratio * float64(n)))
	}
	switch {
	case comp.Policy == kvtrim.PolicyStreaming || comp.DecodePolicy == kvtrim.PolicyStreaming:
		if comp.Recent == 0 {
			comp.Sinks = min(4, budget/2)
			comp.Recent = max(1, budget-comp.Sinks)
		}
		if comp.EvictEvery == 0 {
			comp.EvictEvery = min(16, max(1, comp.Recent/4))
		}
		if comp.Policy == kvtrim.PolicyStreaming {
			comp.Budget, comp.Ratio = 0, 0
		}
	case comp.DecodePolicy == kvtrim.PolicyH2O && comp.Recent == 0:
		comp.Heavy, comp.Recent = budget/2, max(1, budget-budget/2)
	}
	return comp
}

// cmdEval runs a retrieval task over a grid of lengths and depths for each
// configuration and prints a markdown table of accuracy (and, where the
// model has not learnt the task, agreement with the full cache).
func cmdEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "ppl" {
		return cmdEvalPPL(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || (args[0] != "passkey" && args[0] != "lines") {
		return usageErrorf("eval needs a task: passkey, lines or ppl")
	}
	task := args[0]
	fs := newFlagSet("eval "+task, "eval passkey|lines -m MODEL [flags]")
	var c common
	var g genFlags
	g.register(fs)
	c.register(fs)
	fs.Set("ctx-size", "2048")
	lengths := fs.IntSlice("lengths", []int{256, 512, 1024}, "prompt lengths in tokens")
	depths := fs.Float64Slice("depths", []float64{0.1, 0.5, 0.9}, "needle depths (0: start, 1: end)")
	trials := fs.Int("trials", 10, "prompts per grid cell")
	seed := fs.Uint64("eval-seed", 1, "seed of the prompts")
	configs := fs.String("configs", "none,recent,snapkv", "policies to compare: none, recent, snapkv, h2o, streaming; snapkv+h2o or snapkv+streaming for a decode policy; snapkv:AGG for an aggregation")
	if err := parseFlags(fs, args[1:], stderr); err != nil {
		return err
	}
	if g.model == "" {
		return usageErrorf("no model: give a GGUF file with -m")
	}
	if g.comp.Budget == 0 && g.comp.Ratio == 0 {
		g.comp.Ratio = 0.1
	}
	if err := g.validate(); err != nil {
		return err
	}
	cfgs, err := parseConfigs(*configs, g.comp)
	if err != nil {
		return err
	}
	log, model, err := c.openModel(ctx, &g, stderr)
	defer c.close()
	if err != nil {
		return err
	}
	defer model.Close()
	threads := max(g.threads, 0)
	// hits[config][length][depth], agree likewise (with the first config).
	hits := make([][][]int, len(cfgs))
	agree := make([][][]int, len(cfgs))
	for i := range cfgs {
		hits[i], agree[i] = grid(len(*lengths), len(*depths)), grid(len(*lengths), len(*depths))
	}
	r := rand.New(rand.NewPCG(*seed, 0x6b767472696d))
	start := time.Now()
	total := len(*lengths) * len(*depths) * *trials
	done := 0
	for li, length := range *lengths {
		for di, depth := range *depths {
			for range *trials {
				p := tasks.Passkey(r, length, depth)
				if task == "lines" {
					p = tasks.Lines(r, length, max(2, length/170), depth)
				}
				var first string
				for ci, cfg := range cfgs {
					out, err := evalOne(ctx, model, cfg.at(length), p.Text, g, threads)
					if err != nil {
						return fmt.Errorf("%s, %d tokens, depth %g: %w", cfg.name, length, depth, err)
					}
					if p.Correct(out) {
						hits[ci][li][di]++
					}
					if ci == 0 {
						first = answerOf(out)
					}
					if answerOf(out) == first {
						agree[ci][li][di]++
					}
				}
				done++
				logProgress(log, done, total, start)
			}
		}
	}
	printEvalTable(stdout, task, cfgs, *lengths, *depths, *trials, hits, "accuracy")
	if len(cfgs) > 1 {
		fmt.Fprintln(stdout)
		printEvalTable(stdout, task, cfgs, *lengths, *depths, *trials, agree, "same answer as "+cfgs[0].name)
	}
	return nil
}

func grid(a, b int) [][]int {
	g := make([][]int, a)
	for i := range g {
		g[i] = make([]int, b)
	}
	return g
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
	err = s.Generate(ctx, sampler, kvtrim.GenerateOptions{MaxTokens: 8},
		func(_ kvtrim.Token, piece string) error { out.WriteString(piece); return nil })
	return out.String(), err
}

func logProgress(log zerolog.Logger, done, total int, start time.Time) {
	elapsed := time.Since(start)
	eta := time.Duration(float64(elapsed) / float64(done) * float64(total-done))
	log.Info().Msgf("%d/%d prompts, %s elapsed, about %s left", done, total, elapsed.Round(time.Second), eta.Round(time.Second))
}

func printEvalTable(w io.Writer, task string, cfgs []evalConfig, lengths []int, depths []float64, trials int, counts [][][]int, what string) {
	fmt.Fprintf(w, "%s, %s (of %d per cell)\n\n| config |", task, what, trials)
	for _, l := range lengths {
		for _, d := range depths {
			fmt.Fprintf(w, " %d @%.0f%% |", l, d*100)
		}
	}
	fmt.Fprint(w, " all |\n|---|")
	for range len(lengths) * len(depths) {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w, "---|")
	for ci, c := range cfgs {
		fmt.Fprintf(w, "| %s |", c.name)
		sum := 0
		for li := range lengths {
			for di := range depths {
				fmt.Fprintf(w, " %d |", counts[ci][li][di])
				sum += counts[ci][li][di]
			}
		}
		fmt.Fprintf(w, " %.0f%% |\n", 100*float64(sum)/float64(trials*len(lengths)*len(depths)))
	}
}
