package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/rs/zerolog"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// storyPrompt is the demo story repeated and cut to n tokens of model's
// vocabulary.
func storyPrompt(lib *bindings.Library, model string, n int, log zerolog.Logger) (string, error) {
	m, err := kvtrim.LoadModel(lib, model, kvtrim.ModelOptions{GPULayers: 0}, log)
	if err != nil {
		return "", err
	}
	defer m.Close()
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

// cmdBench runs the same prompt with the full cache and with compression,
// alternating, and prints medians side by side: prefill, the compression
// steps and their share of prefill, n_kv, and decode speed.
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", "bench -m MODEL (-p TEXT | -f FILE | --repeat-tokens N) --policy snapkv --ratio R [flags]")
	var c common
	var g genFlags
	g.register(fs)
	c.register(fs)
	reps := fs.Int("reps", 5, "runs of each configuration (the median is shown)")
	synth := fs.Int("prompt-tokens", 0, "instead of -p/-f, about this many tokens of the demo's story text, repeated")
	fs.Set("n-predict", "64")
	fs.Set("temp", "0")
	fs.Set("ignore-eos", "true")
	fs.Set("policy", "snapkv")
	fs.Set("ratio", "0.1")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if g.model == "" {
		return usageErrorf("no model: give a GGUF file with -m")
	}
	if *reps < 1 {
		return usageErrorf("--reps %d: give at least 1", *reps)
	}
	prompt, err := kvtrim.ReadPrompt(g.prompt, g.file)
	if err != nil {
		return err
	}
	log, lib, err := c.open(ctx, &g, stderr, false)
	defer c.close()
	if err != nil {
		return err
	}
	if *synth > 0 {
		if prompt, err = storyPrompt(lib, g.model, *synth, log); err != nil {
			return err
		}
	}
	full := g.fullCache()
	runs := []*genFlags{&full, &g}
	all := make([][]kvtrim.Stats, len(runs))
	for i := range *reps {
		for j, r := range runs {
			st, err := generate(ctx, lib, r, prompt, io.Discard, log)
			if err != nil {
				return err
			}
			all[j] = append(all[j], st)
			log.Info().Msgf("rep %d/%d %s: prefill %.0f ms, decode %.0f tokens/s", i+1, *reps, st.Policy, st.PrefillMs, st.DecodeTokS)
		}
	}
	med := func(sts []kvtrim.Stats, f func(kvtrim.Stats) float64) float64 {
		v := make([]float64, len(sts))
		for i, s := range sts {
			v[i] = f(s)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	steps := func(s kvtrim.Stats) float64 { return s.ObserveMs + s.ScoreMs + s.EvictMs + s.CompactMs }
	fmt.Fprintf(stdout, "model %s, %d prompt tokens, %d generated, %d threads, median of %d runs each\n\n",
		g.model, all[0][0].PromptTokens, g.nPredict, all[0][0].Threads, *reps)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\tfull cache\t%s\t\n", g.comp.Policy)
	rows := []struct {
		name string
		f    func(kvtrim.Stats) float64
		fmt  string
	}{
		{"cells kept", func(s kvtrim.Stats) float64 { return float64(s.KeptCells) }, "%.0f"},
		{"n_kv after prefill", func(s kvtrim.Stats) float64 { return float64(s.NKVAfter) }, "%.0f"},
		{"prefill ms", func(s kvtrim.Stats) float64 { return s.PrefillMs }, "%.1f"},
		{"observe ms", func(s kvtrim.Stats) float64 { return s.ObserveMs }, "%.2f"},
		{"score ms", func(s kvtrim.Stats) float64 { return s.ScoreMs }, "%.2f"},
		{"evict ms", func(s kvtrim.Stats) float64 { return s.EvictMs }, "%.2f"},
		{"compact ms", func(s kvtrim.Stats) float64 { return s.CompactMs }, "%.2f"},
		{"steps / prefill %", func(s kvtrim.Stats) float64 { return 100 * steps(s) / s.PrefillMs }, "%.1f"},
		{"decode tokens/s", func(s kvtrim.Stats) float64 { return s.DecodeTokS }, "%.0f"},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t"+r.fmt+"\t"+r.fmt+"\t\n", r.name, med(all[0], r.f), med(all[1], r.f))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	dec := func(s kvtrim.Stats) float64 { return s.DecodeTokS }
	fmt.Fprintf(stdout, "\ndecode speed, compressed / full: %.2f\n", med(all[1], dec)/med(all[0], dec))
	return nil
}
