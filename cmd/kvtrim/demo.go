package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

const demoPrompt = "Once upon a time"

// cmdDemo runs the bundled tiny model with no arguments, fetching the pinned
// libllama first if none is installed.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", "demo [flags]")
	var c common
	var g genFlags
	g.register(fs)
	c.register(fs)
	// The demo's own defaults: greedy, a short story, a small cache.
	fs.Set("prompt", demoPrompt)
	fs.Set("n-predict", "96")
	fs.Set("ctx-size", "256")
	fs.Set("temp", "0")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if err := g.validate(); err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	defer c.close()
	lib, err := kvtrim.OpenLibrary(ctx, kvtrim.LibraryOptions{Path: c.lib, Fetch: true, Log: log})
	if err != nil {
		return err
	}
	if g.model == "" {
		dir := filepath.Join(filepath.Dir(bindings.CacheDir(bindings.OSEnv())), "..", "models")
		if g.model, err = kvtrim.BundledModel(filepath.Clean(dir)); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "kvtrim demo: %s with llama.cpp %s from %s\n", filepath.Base(g.model), lib.Version, lib.Dir)
	fmt.Fprintf(stderr, "prompt: %q, %d tokens greedy, full cache\n\n", g.prompt, g.nPredict)
	fmt.Fprint(stdout, g.prompt)
	st, err := generate(ctx, lib, &g, g.prompt, stdout, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "\n%d prompt tokens in %.1f ms, %d tokens decoded at %.1f tokens/s (n_ctx %d)\n",
		st.PromptTokens, st.PrefillMs, st.DecodeTokens, st.DecodeTokS, st.NCtx)
	return nil
}
