package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// Upper bounds that catch typos before llama.cpp tries to allocate them.
const (
	maxCtx     = 1 << 24 // 16M cells
	maxThreads = 1024
	maxPredict = 1 << 30
)

// genFlags are the model, context and sampling flags of run and demo,
// spelled as llama.cpp spells them.
type genFlags struct {
	model, prompt, file string
	nPredict            int
	nCtx, nBatch, nUbat int
	threads             int
	seed                uint32
	temp                float32
	topK                int
	topP, minP          float32
	ignoreEOS           bool
	gpuLayers           int
	noRepack, repack    bool
	flashAttn           string
	rpc                 string // ggml-rpc-server endpoints, comma-separated
	chat                bool
	statsJSON           string
	// comp holds the compression flags' values; validate lays the ones
	// given (on the command line or in the environment) over
	// kvtrim.DefaultCompression, as a request's "kvtrim" object is laid
	// over the server's.
	comp kvtrim.Compression
	fs   *pflag.FlagSet // where the compression flags are
	// chunkFlag: --chunk is the compression's (eval ppl has its own).
	chunkFlag bool
}

// register adds every flag of a generating command.
func (g *genFlags) register(fs *pflag.FlagSet) {
	g.registerModel(fs)
	fs.StringVarP(&g.prompt, "prompt", "p", "", "prompt text")
	fs.StringVarP(&g.file, "file", "f", "", "read the prompt from this file")
	fs.IntVarP(&g.nPredict, "n-predict", "n", 128, "tokens to generate (-1: until end of text or a full context)")
	fs.Uint32VarP(&g.seed, "seed", "s", 0xFFFFFFFF, "sampling seed (default: random)")
	fs.Float32Var(&g.temp, "temp", 0.8, "temperature (0: greedy)")
	fs.IntVar(&g.topK, "top-k", 40, "top-k sampling (0: off)")
	fs.Float32Var(&g.topP, "top-p", 0.95, "top-p sampling (1: off)")
	fs.Float32Var(&g.minP, "min-p", 0.05, "min-p sampling (0: off)")
	fs.BoolVar(&g.ignoreEOS, "ignore-eos", false, "keep generating after end-of-text")
	fs.BoolVar(&g.chat, "chat", false, "wrap the prompt in the model's chat template")
	fs.StringVar(&g.statsJSON, "stats-json", "", "write timings and token counts to this JSON file")
	fs.StringVar(&g.comp.Policy, "policy", "none", "KV compression: "+strings.Join(kvtrim.PolicyNames(), ", ")+"; "+strings.Join(kvtrim.DecodePolicyNames(), ", ")+" evict while generating, the others once, after the prompt (docs/ARCHITECTURE.md)")
	fs.IntVar(&g.comp.Budget, "budget", 0, "cells to keep, the window included (prompt-time policies, tova)")
	fs.Float64Var(&g.comp.Ratio, "ratio", 0, "or: the share of the prompt to keep, in (0, 1]")
	g.registerPolicyOptions(fs)
}

// registerModel adds the flags of the model and its context.
func (g *genFlags) registerModel(fs *pflag.FlagSet) {
	fs.StringVarP(&g.model, "model", "m", "", "GGUF model file")
	fs.IntVarP(&g.nCtx, "ctx-size", "c", 4096, "context size in tokens (0: the model's training context)")
	fs.IntVarP(&g.nBatch, "batch-size", "b", 2048, "logical batch size for prompt processing")
	fs.IntVar(&g.nUbat, "ubatch-size", 512, "physical batch size (-ub)")
	fs.IntVarP(&g.threads, "threads", "t", -1, "threads (-1: one per CPU)")
	fs.IntVar(&g.gpuLayers, "n-gpu-layers", -1, "layers to offload to the GPU (-ngl; -1: all)")
	fs.BoolVar(&g.noRepack, "no-repack", false, "keep the weights as the file lays them out, not repacked for llama.cpp's CPU matrix kernels (-nr; AMX among them)")
	fs.BoolVar(&g.repack, "repack", false, "repack the weights for llama.cpp's CPU matrix kernels where it can (the default)")
	fs.StringVar(&g.flashAttn, "flash-attn", "auto", "flash attention (-fa): on, off or auto")
	fs.StringVar(&g.rpc, "rpc", "", "ggml-rpc-server endpoints (host:port, comma-separated) whose devices take the offloaded layers and KV cache (a libllama built with 'kvtrim lib build --rpc')")
}

// modelOptions are the model's load settings the flags give.
func (g *genFlags) modelOptions() kvtrim.ModelOptions {
	return kvtrim.ModelOptions{GPULayers: int32(g.gpuLayers), NoRepack: g.noRepack}
}

// registerPolicyOptions adds the settings of the compression policies.
func (g *genFlags) registerPolicyOptions(fs *pflag.FlagSet) {
	g.fs = fs
	fs.IntVar(&g.comp.Window, "window", 0, "observation window: the last prompt tokens, which vote and are kept (0: an eighth of the budget, between 4 and 32)")
	fs.IntVar(&g.comp.Lookahead, "lookahead", kvtrim.DefaultLookahead, "snapkv: tokens generated greedily on the full cache whose attention votes with the window's, then dropped (0: none, the paper's SnapKV)")
	fs.IntVar(&g.comp.Kernel, "kernel", kvtrim.DefaultKernel, "odd width of the 1-D pooling of the votes")
	fs.StringVar(&g.comp.Pool, "pool", kvtrim.DefaultPool, "pooling of the votes: avg or max")
	fs.StringVar(&g.comp.DecodePolicy, "decode-policy", "", "after a prompt-time --policy: "+strings.Join(kvtrim.DecodePolicyNames(), ", ")+" keeps the total bounded while generating (streaming: --sinks + --recent; h2o: --heavy + --recent; tova: the budget)")
	fs.IntVar(&g.comp.Sinks, "sinks", kvtrim.DefaultSinks, "streaming: attention-sink positions kept at the start")
	fs.IntVar(&g.comp.Recent, "recent", 0, "streaming, h2o: recent positions kept")
	fs.IntVar(&g.comp.Heavy, "heavy", 0, "h2o: heavy-hitter positions kept (or --ratio, split evenly with --recent)")
	fs.IntVar(&g.comp.EvictEvery, "evict-every", 0, "streaming, h2o, tova: positions evicted at once (default: a quarter of --recent up to 16 for streaming, 1 for the others; docs/H2O-STREAMING.md)")
	fs.StringVar(&g.comp.Aggregate, "aggregate", kvtrim.DefaultAggregate, "how heads and layers share one selection: max, quota, normsum, votes or kvsum (docs/SNAPKV.md)")
	if fs.Lookup("chunk") == nil { // eval ppl's --chunk is its decode size
		g.chunkFlag = true
		fs.IntVar(&g.comp.Chunk, "chunk", 0, "prefill a compressed prompt this many tokens at a time, evicting back to the budget after each, so that only budget + chunk cells are held (0: when the prompt does not fit -c, chunks of "+strconv.Itoa(kvtrim.DefaultChunk)+"; -1: never)")
	}
	fs.StringVar(&g.comp.ChunkPolicy, "chunk-policy", kvtrim.DefaultChunkPolicy, "what each chunk's eviction keeps: "+strings.Join(kvtrim.ChunkPolicyNames(), ", ")+" (docs/CHUNKED.md)")
}

// validate checks the numbers before anything is loaded.
func (g *genFlags) validate() error {
	switch {
	case g.nPredict < -1:
		return usageErrorf("-n %d: give a count of tokens, or -1 for no limit", g.nPredict)
	case g.nPredict > maxPredict:
		return usageErrorf("-n %d is absurdly large: at most %d", g.nPredict, maxPredict)
	case g.nCtx < 0 || g.nCtx > maxCtx:
		return usageErrorf("-c %d: give a context size between 1 and %d (0: the model's)", g.nCtx, maxCtx)
	case g.nBatch < 1 || g.nBatch > maxCtx:
		return usageErrorf("-b %d: give a batch size between 1 and %d", g.nBatch, maxCtx)
	case g.nUbat < 1 || g.nUbat > maxCtx:
		return usageErrorf("-ub %d: give a physical batch size between 1 and %d", g.nUbat, maxCtx)
	case g.threads == 0 || g.threads < -1 || g.threads > maxThreads:
		return usageErrorf("-t %d: give between 1 and %d threads, or -1 for one per CPU", g.threads, maxThreads)
	case g.temp < 0:
		return usageErrorf("--temp %g: give a temperature >= 0", g.temp)
	case g.topP < 0 || g.topP > 1:
		return usageErrorf("--top-p %g: give a value in [0, 1]", g.topP)
	case g.minP < 0 || g.minP > 1:
		return usageErrorf("--min-p %g: give a value in [0, 1]", g.minP)
	case g.topK < 0:
		return usageErrorf("--top-k %d: give a count >= 0", g.topK)
	}
	if _, err := kvtrim.ParseFlashAttn(g.flashAttn); err != nil {
		return usageError{err}
	}
	comp, err := kvtrim.DefaultCompression().Patch(g.compressionPatch())
	if err != nil {
		return usageError{err}
	}
	g.comp = comp
	return nil
}

// compressionPatch is the compression flags that were given, by any of
// their names.
func (g *genFlags) compressionPatch() kvtrim.CompressionPatch {
	given := func(names ...string) bool {
		for _, n := range names {
			if f := g.fs.Lookup(n); f != nil && f.Changed {
				return true
			}
		}
		return false
	}
	c := &g.comp
	var p kvtrim.CompressionPatch
	pick(&p.Policy, &c.Policy, given("policy", "kv-policy"))
	pick(&p.Budget, &c.Budget, given("budget", "kv-budget"))
	pick(&p.Ratio, &c.Ratio, given("ratio", "kv-ratio"))
	pick(&p.Window, &c.Window, given("window", "kv-window"))
	pick(&p.Lookahead, &c.Lookahead, given("lookahead"))
	pick(&p.Kernel, &c.Kernel, given("kernel"))
	pick(&p.Pool, &c.Pool, given("pool"))
	pick(&p.Aggregate, &c.Aggregate, given("aggregate"))
	pick(&p.DecodePolicy, &c.DecodePolicy, given("decode-policy", "kv-decode-policy"))
	pick(&p.Sinks, &c.Sinks, given("sinks"))
	pick(&p.Recent, &c.Recent, given("recent"))
	pick(&p.Heavy, &c.Heavy, given("heavy"))
	pick(&p.EvictEvery, &c.EvictEvery, given("evict-every"))
	pick(&p.Chunk, &c.Chunk, g.chunkFlag && given("chunk"))
	pick(&p.ChunkPolicy, &c.ChunkPolicy, given("chunk-policy"))
	return p
}

// pick sets *dst to v when given.
func pick[T any](dst **T, v *T, given bool) {
	if given {
		*dst = v
	}
}

// fullCache is g with compression off and no stats file: the baseline run
// of demo and bench.
func (g genFlags) fullCache() genFlags {
	g.comp = kvtrim.Compression{Policy: kvtrim.PolicyNone}
	g.statsJSON = ""
	return g
}

func (g *genFlags) sampler() bindings.SamplerOptions {
	seed := g.seed
	if seed == 0xFFFFFFFF {
		seed = uint32(time.Now().UnixNano())
	}
	return bindings.SamplerOptions{Temp: g.temp, TopK: int32(g.topK), TopP: g.topP, MinP: g.minP, Seed: seed}
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "run -m MODEL -p TEXT [-n N] [flags]")
	var c common
	var g genFlags
	g.register(fs)
	c.register(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q (quote the prompt: -p \"...\")", fs.Arg(0))
	}
	if g.model == "" {
		return usageErrorf("no model: give a GGUF file with -m")
	}
	prompt, err := kvtrim.ReadPrompt(g.prompt, g.file)
	if err != nil {
		return err
	}
	log, model, err := c.openModel(ctx, &g, stderr)
	defer c.close()
	if err != nil {
		return err
	}
	defer model.Close()
	_, err = generate(ctx, model, &g, prompt, stdout, log)
	return err
}

// generate prefills the prompt into a new session of model and streams the
// generated text to out. It writes --stats-json if asked and returns the
// stats.
func generate(ctx context.Context, model *kvtrim.Model, g *genFlags, prompt string, out io.Writer, log zerolog.Logger) (kvtrim.Stats, error) {
	var err error
	if g.chat {
		if prompt, err = model.ApplyChatTemplate("", []bindings.ChatMessage{{Role: "user", Content: prompt}}, true); err != nil {
			return kvtrim.Stats{}, err
		}
	}
	threads := g.threads
	if threads < 0 {
		threads = 0
	}
	opt := kvtrim.SessionOptions{
		NCtx: g.nCtx, NBatch: g.nBatch, NUbatch: g.nUbat, Threads: threads, FlashAttn: g.flashAttn, Compression: g.comp,
		Progress: prefillProgress(log),
	}
	sess, err := model.NewSession(opt)
	if err != nil {
		return kvtrim.Stats{}, err
	}
	defer sess.Close()
	tokens, err := sess.Tokenize(prompt)
	if err != nil {
		return kvtrim.Stats{}, err
	}
	if prompt == "" || len(tokens) == 0 || (len(tokens) == 1 && tokens[0] == model.Vocab().BOS()) {
		return kvtrim.Stats{}, usageErrorf("empty prompt: give some text with -p or -f")
	}
	if err := sess.Prefill(ctx, tokens); err != nil {
		return kvtrim.Stats{}, err
	}
	if note := sess.Stats().Note; note != "" {
		log.Warn().Msg(note) // the compression did less than asked
	}
	sampler := model.Library().NewSampler(g.sampler())
	defer sampler.Close()
	w := bufio.NewWriter(out)
	genErr := sess.Generate(ctx, sampler, kvtrim.GenerateOptions{MaxTokens: g.nPredict, IgnoreEOS: g.ignoreEOS},
		func(_ kvtrim.Token, piece string) error {
			if _, err := w.WriteString(piece); err != nil {
				return err
			}
			return w.Flush()
		})
	w.WriteString("\n")
	w.Flush()
	st := sess.Stats()
	if st.StopReason == "context_full" {
		log.Warn().Int("n_ctx", st.NCtx).Msg("stopped: the context is full (raise -c)")
	}
	log.Debug().Int("prompt_tokens", st.PromptTokens).Float64("prefill_ms", st.PrefillMs).
		Int("decode_tokens", st.DecodeTokens).Float64("decode_tok_s", st.DecodeTokS).Msg("done")
	if g.statsJSON != "" {
		if err := writeJSON(g.statsJSON, st); err != nil {
			return st, err
		}
	}
	return st, genErr
}

// prefillProgress logs prefill progress at most once a second.
func prefillProgress(log zerolog.Logger) func(done, total int) {
	start := time.Now()
	last := start
	return func(done, total int) {
		if done == total && last == start {
			return // one quick batch: nothing worth showing
		}
		if now := time.Now(); now.Sub(last) >= time.Second || done == total {
			last = now
			log.Info().Msgf("prefill %d/%d tokens (%.0f%%)", done, total, 100*float64(done)/float64(total))
		}
	}
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write stats: %w", err)
	}
	return nil
}
