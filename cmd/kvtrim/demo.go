package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// demoStory is the demo's prompt: five short stories in the style the bundled
// model was trained on (original text written for kvtrim's tests).
//
//go:embed demo_story.txt
var demoStory string

// cmdDemo runs the bundled tiny model on a story prompt twice, with the full
// cache and with SnapKV, and shows both side by side. It fetches the pinned
// libllama first if none is installed.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", "demo [flags]")
	var c common
	var g genFlags
	g.register(fs)
	c.register(fs)
	// The demo's own defaults: greedy, a short continuation, SnapKV at 25%.
	fs.Set("n-predict", "48")
	fs.Set("ctx-size", "1024")
	fs.Set("temp", "0")
	fs.Set("policy", "snapkv")
	fs.Set("ratio", "0.25")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	log, lib, err := c.open(ctx, &g, stderr, true)
	defer c.close()
	if err != nil {
		return err
	}
	if g.model == "" {
		dir := filepath.Join(filepath.Dir(bindings.CacheDir(bindings.OSEnv())), "..", "models")
		if g.model, err = kvtrim.BundledModel(filepath.Clean(dir)); err != nil {
			return err
		}
	}
	prompt := g.prompt
	if prompt == "" {
		prompt = strings.TrimSpace(demoStory)
	}
	model, err := kvtrim.LoadModel(lib, g.model, g.modelOptions(), log)
	if err != nil {
		return err
	}
	defer model.Close()
	fmt.Fprintf(stdout, "kvtrim demo: %s, llama.cpp %s from %s\n", filepath.Base(g.model), lib.Version, lib.Dir)
	fmt.Fprintf(stdout, "prompt: %q ... %q (%d bytes), %d tokens greedy\n\n", head(prompt, 40), tail(prompt, 40), len(prompt), g.nPredict)

	full := g.fullCache()
	runs := []struct {
		name string
		g    *genFlags
	}{{"full cache", &full}, {g.comp.Policy, &g}}
	stats := make([]kvtrim.Stats, len(runs))
	for i, r := range runs {
		var text strings.Builder
		st, err := generate(ctx, model, r.g, prompt, &text, log)
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		stats[i] = st
		fmt.Fprintf(stdout, "%s:\n  ...%s\n\n", r.name, strings.TrimSpace(text.String()))
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\t%s\t%s\t\n", runs[0].name, runs[1].name)
	row := func(name string, f func(kvtrim.Stats) string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", name, f(stats[0]), f(stats[1]))
	}
	row("prompt tokens", func(s kvtrim.Stats) string { return fmt.Sprint(s.PromptTokens) })
	row("cells kept", func(s kvtrim.Stats) string { return fmt.Sprint(s.KeptCells) })
	row("n_kv after prefill", func(s kvtrim.Stats) string { return fmt.Sprint(s.NKVAfter) })
	row("KV bytes of the prompt", func(s kvtrim.Stats) string { return fmt.Sprint(s.KVBytesAfter) })
	row("prefill ms", func(s kvtrim.Stats) string { return fmt.Sprintf("%.1f", s.PrefillMs) })
	row("observe+score+evict+compact ms", func(s kvtrim.Stats) string {
		return fmt.Sprintf("%.2f", s.ObserveMs+s.ScoreMs+s.EvictMs+s.CompactMs)
	})
	row("decode tokens/s", func(s kvtrim.Stats) string { return fmt.Sprintf("%.0f", s.DecodeTokS) })
	return tw.Flush()
}

func head(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
