package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/internal/server"
)

// serveFlags are kvtrim serve's flags, spelled as llama-server spells them,
// plus kvtrim's --kv-* compression flags.
type serveFlags struct {
	g            genFlags // model, context, sampling defaults and compression
	parallel     int
	host         string
	port         int
	apiKey       string
	apiKeyFile   string
	alias        string
	timeout      int
	seed         int64
	metrics      bool
	slots        bool
	noSlots      bool
	props        bool
	noWebUI      bool
	chatTemplate string
}

func (f *serveFlags) register(fs *pflag.FlagSet) {
	g := &f.g
	g.registerModel(fs)
	fs.IntVar(&f.parallel, "parallel", 1, "slots: requests served at once, each with ctx-size/parallel cells (-np)")
	fs.StringVar(&f.host, "host", "127.0.0.1", "address to listen on")
	fs.IntVar(&f.port, "port", 8080, "port to listen on (0: any free one)")
	fs.StringVar(&f.apiKey, "api-key", "", "API key(s), comma-separated, required on every endpoint but /health")
	fs.StringVar(&f.apiKeyFile, "api-key-file", "", "file with one API key per line")
	fs.StringVarP(&f.alias, "alias", "a", "", "model name in responses (default: the model's path)")
	fs.IntVar(&f.timeout, "timeout", 600, "seconds to read a request, and to let running requests finish on shutdown")
	fs.IntVarP(&g.nPredict, "n-predict", "n", -1, "default tokens to generate (-1: until end of text or a full context)")
	fs.Int64VarP(&f.seed, "seed", "s", -1, "default sampling seed (-1: random)")
	fs.Float32Var(&g.temp, "temp", 0.8, "default temperature (0: greedy)")
	fs.IntVar(&g.topK, "top-k", 40, "default top-k (0: off)")
	fs.Float32Var(&g.topP, "top-p", 0.95, "default top-p (1: off)")
	fs.Float32Var(&g.minP, "min-p", 0.05, "default min-p (0: off)")
	fs.BoolVar(&f.metrics, "metrics", false, "enable GET /metrics (Prometheus)")
	fs.BoolVar(&f.slots, "slots", true, "enable GET /slots")
	fs.BoolVar(&f.noSlots, "no-slots", false, "disable GET /slots")
	fs.BoolVar(&f.props, "props", false, `enable POST /props, whose "kvtrim" object changes the default compression`)
	fs.BoolVar(&f.noWebUI, "no-webui", false, "accepted for llama-server's sake; kvtrim has no web UI")
	fs.StringVar(&f.chatTemplate, "chat-template", "", "chat template name or text (default: the model's, else chatml)")
	fs.StringVar(&g.comp.Policy, "kv-policy", "none", "default KV compression of every request: none, snapkv, recent, streaming or h2o")
	fs.IntVar(&g.comp.Budget, "kv-budget", 0, "cells to keep, the window included (snapkv, recent)")
	fs.Float64Var(&g.comp.Ratio, "kv-ratio", 0, "or: the share of the prompt to keep, in (0, 1]")
	g.registerPolicyOptions(fs)
	fs.IntVar(&g.comp.Window, "kv-window", kvtrim.DefaultWindow, "observation window (same as --window)")
	fs.StringVar(&g.comp.DecodePolicy, "kv-decode-policy", "", "after snapkv or recent: streaming or h2o while generating (same as --decode-policy)")
}

// llamaEnv lists the llama-server environment variables kvtrim serve reads,
// and the flag each fills when the command line does not give it.
func llamaEnv() [][2]string {
	return [][2]string{
		{"LLAMA_ARG_MODEL", "model"},
		{"LLAMA_ARG_CTX_SIZE", "ctx-size"},
		{"LLAMA_ARG_N_PARALLEL", "parallel"},
		{"LLAMA_ARG_BATCH", "batch-size"},
		{"LLAMA_ARG_UBATCH", "ubatch-size"},
		{"LLAMA_ARG_THREADS", "threads"},
		{"LLAMA_ARG_N_GPU_LAYERS", "n-gpu-layers"},
		{"LLAMA_ARG_FLASH_ATTN", "flash-attn"},
		{"LLAMA_ARG_HOST", "host"},
		{"LLAMA_ARG_PORT", "port"},
		{"LLAMA_ARG_API_KEY", "api-key"},
		{"LLAMA_ARG_API_KEY_FILE", "api-key-file"},
		{"LLAMA_ARG_ALIAS", "alias"},
		{"LLAMA_ARG_TIMEOUT", "timeout"},
		{"LLAMA_ARG_N_PREDICT", "n-predict"},
		{"LLAMA_ARG_ENDPOINT_METRICS", "metrics"},
		{"LLAMA_ARG_ENDPOINT_SLOTS", "slots"},
		{"LLAMA_ARG_ENDPOINT_PROPS", "props"},
		{"LLAMA_ARG_NO_WEBUI", "no-webui"},
		{"LLAMA_ARG_CHAT_TEMPLATE", "chat-template"},
	}
}

// fromEnv fills the flags the command line left unset from LLAMA_ARG_*.
func fromEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	for _, e := range llamaEnv() {
		v, ok := lookup(e[0])
		fl := fs.Lookup(e[1])
		if !ok || fl == nil || fl.Changed {
			continue
		}
		if fl.Value.Type() == "bool" {
			v = envBool(v)
		}
		if err := fs.Set(e[1], v); err != nil {
			return usageErrorf("%s=%q: %v", e[0], v, err)
		}
	}
	return nil
}

// envBool maps llama.cpp's spellings of a boolean onto Go's.
func envBool(v string) string {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "on", "enabled", "yes", "y":
		return "true"
	case "off", "disabled", "no", "n":
		return "false"
	}
	return v
}

// unsupportedFlag returns the first llama-server flag in args that kvtrim
// serve does not support, as the user spelled it, or "".
func unsupportedFlag(args []string) string {
	for _, a := range args {
		if a == "--" {
			return ""
		}
		if len(a) < 2 || a[0] != '-' {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if unsupportedLlamaFlag(name) {
			return strings.SplitN(a, "=", 2)[0]
		}
	}
	return ""
}

// unsupportedLlamaFlag reports whether name (without dashes) is one of
// llama-server's flags that kvtrim serve refuses rather than ignore.
func unsupportedLlamaFlag(name string) bool {
	switch name {
	// adapters, multimodal, RoPE and context extension
	case "lora", "lora-scaled", "lora-init-without-apply", "control-vector", "control-vector-scaled",
		"control-vector-layer-range", "mmproj", "mmproj-url", "mmproj-auto", "no-mmproj", "no-mmproj-offload",
		"rope-scaling", "rope-scale", "rope-freq-base", "rope-freq-scale", "yarn-orig-ctx", "yarn-ext-factor",
		"yarn-attn-factor", "yarn-beta-slow", "yarn-beta-fast", "context-shift", "no-context-shift", "keep",
		// grammars, templates, reasoning, tools
		"grammar", "grammar-file", "json-schema", "json-schema-file", "j", "jf", "jinja", "no-jinja",
		"chat-template-file", "chat-template-kwargs", "reasoning-format", "reasoning-budget", "tools",
		"system-prompt-file",
		// batching, cache types and placement, prompt caching
		"cont-batching", "cb", "no-cont-batching", "nocb", "cache-type-k", "ctk", "cache-type-v", "ctv",
		"cache-type-k-draft", "ctkd", "cache-type-v-draft", "ctvd", "cache-reuse", "cache-ram", "cram",
		"slot-save-path", "slot-prompt-similarity", "sps", "swa-full", "kv-unified", "kvu", "no-kv-offload", "nkvo",
		"defrag-thold", "dt",
		// embeddings and reranking
		"embedding", "embeddings", "reranking", "rerank", "pooling",
		// speculative decoding
		"draft", "draft-max", "draft-n", "draft-min", "draft-p-min", "model-draft", "md", "ctx-size-draft", "cd",
		"device-draft", "devd", "gpu-layers-draft", "n-gpu-layers-draft", "ngld", "threads-draft", "td",
		"threads-batch-draft", "tbd", "spec-replace",
		// model sources and devices
		"hf-repo", "hf", "hfr", "hf-file", "hff", "hf-token", "hft", "hf-repo-draft", "hfd", "model-url", "mu",
		"docker-repo", "dr", "split-mode", "sm", "tensor-split", "ts", "main-gpu", "mg", "override-tensor", "ot",
		"cpu-moe", "cmoe", "n-cpu-moe", "ncmoe", "mlock", "no-mmap", "numa", "device", "dev", "rpc", "override-kv",
		"offline", "check-tensors",
		// threads beyond -t
		"threads-batch", "tb", "threads-http", "cpu-mask", "C", "cpu-range", "Cr", "cpu-strict", "prio", "poll",
		// HTTP extras
		"path", "api-prefix", "ssl-key-file", "ssl-cert-file", "webui", "webui-config", "webui-config-file",
		"metrics-port",
		// samplers kvtrim does not build
		"samplers", "sampling-seq", "dynatemp-range", "dynatemp-exp", "mirostat", "mirostat-lr", "mirostat-ent",
		"repeat-penalty", "repeat-last-n", "presence-penalty", "frequency-penalty", "dry-multiplier", "dry-base",
		"dry-allowed-length", "dry-penalty-last-n", "dry-sequence-breaker", "typical", "top-nsigma",
		"xtc-probability", "xtc-threshold", "logit-bias", "l", "ignore-eos", "n-probs", "special", "sp", "escape",
		"e", "no-escape", "spm-infill", "lookup-cache-static", "lcs", "lookup-cache-dynamic", "lcd":
		return true
	}
	return false
}

// parseServe parses serve's command line, then the environment, and
// checks everything that can be checked before loading anything.
func parseServe(args []string, lookup func(string) (string, bool), stderr io.Writer) (*serveFlags, *common, server.Config, error) {
	fs := newFlagSet("serve", "serve -m MODEL [--host 127.0.0.1] [--port 8080] [-np N] [--kv-policy P] [flags]")
	var f serveFlags
	var c common
	f.register(fs)
	c.register(fs)
	if name := unsupportedFlag(args); name != "" {
		return nil, nil, server.Config{}, usageErrorf("kvtrim serve does not support llama-server's %s", name)
	}
	if err := parseFlags(fs, args, stderr); err != nil {
		return nil, nil, server.Config{}, err
	}
	if fs.NArg() > 0 {
		return nil, nil, server.Config{}, usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	if err := fromEnv(fs, lookup); err != nil {
		return nil, nil, server.Config{}, err
	}
	cfg, err := f.config()
	return &f, &c, cfg, err
}

// config checks the flags and turns them into the server's configuration.
func (f *serveFlags) config() (server.Config, error) {
	g := &f.g
	switch {
	case g.model == "":
		return server.Config{}, usageErrorf("no model: give a GGUF file with -m (or LLAMA_ARG_MODEL)")
	case f.port < 0 || f.port > 65535:
		return server.Config{}, usageErrorf("--port %d: give a port between 0 and 65535", f.port)
	case f.timeout < 1:
		return server.Config{}, usageErrorf("--timeout %d: give a number of seconds >= 1", f.timeout)
	case f.seed < -1 || f.seed > int64(server.RandomSeed):
		return server.Config{}, usageErrorf("--seed %d: give a value in [0, %d], or -1 for random", f.seed, uint32(server.RandomSeed))
	case f.host == "":
		return server.Config{}, usageErrorf("--host: give an address to listen on")
	}
	if err := g.validate(); err != nil {
		return server.Config{}, err
	}
	keys, err := f.apiKeys()
	if err != nil {
		return server.Config{}, err
	}
	seed := uint32(server.RandomSeed)
	if f.seed >= 0 {
		seed = uint32(f.seed)
	}
	threads := g.threads
	if threads < 0 {
		threads = 0
	}
	cfg := server.Config{
		Parallel: f.parallel, CtxSize: g.nCtx, Batch: g.nBatch, UBatch: g.nUbat, Threads: threads,
		FlashAttn: g.flashAttn, Alias: f.alias, APIKeys: keys, Metrics: f.metrics, Slots: f.slots && !f.noSlots, Props: f.props,
		ChatTemplate: f.chatTemplate, Compression: g.comp,
		Sampling: server.Sampling{NPredict: g.nPredict, Temp: g.temp, TopK: g.topK, TopP: g.topP, MinP: g.minP, Seed: seed},
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

// apiKeys are --api-key's comma-separated keys and --api-key-file's lines.
func (f *serveFlags) apiKeys() ([]string, error) {
	var keys []string
	for _, k := range strings.Split(f.apiKey, ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	if f.apiKeyFile != "" {
		b, err := os.ReadFile(f.apiKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--api-key-file: %w", err)
		}
		n := len(keys)
		for _, line := range strings.Split(string(b), "\n") {
			if k := strings.TrimSpace(line); k != "" {
				keys = append(keys, k)
			}
		}
		if len(keys) == n {
			return nil, usageErrorf("--api-key-file %s holds no key", f.apiKeyFile)
		}
	}
	return keys, nil
}

// cmdServe runs the HTTP server until SIGINT or SIGTERM, then stops taking
// requests, lets the running ones finish within --timeout, and exits.
func cmdServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	f, c, cfg, err := parseServe(args, os.LookupEnv, stderr)
	if err != nil {
		return err
	}
	log, lib, err := c.open(ctx, nil, stderr, false)
	defer c.close()
	if err != nil {
		return err
	}
	srv, err := server.New(cfg, log)
	if err != nil {
		return usageError{err}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(f.host, strconv.Itoa(f.port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Requests' contexts derive from reqCtx, cancelled when shutdown cannot
	// wait any longer.
	reqCtx, cancelRequests := context.WithCancel(context.Background())
	defer cancelRequests()
	timeout := time.Duration(f.timeout) * time.Second
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: timeout,
		ReadTimeout:       timeout,
		IdleTimeout:       timeout,
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	log.Info().Str("addr", ln.Addr().String()).Msg("listening; loading the model")

	model, err := kvtrim.LoadModel(lib, f.g.model, kvtrim.ModelOptions{GPULayers: int32(f.g.gpuLayers)}, log)
	if err == nil {
		defer model.Close()
		err = srv.Start(model)
	}
	if err != nil {
		hs.Close()
		return err
	}
	defer srv.Close()
	log.Info().Str("url", "http://"+ln.Addr().String()).Str("model", f.g.model).Msg("server is ready")
	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	return shutdown(hs, srv, cancelRequests, timeout, log)
}

// shutdown stops taking requests and waits up to timeout for the running
// ones, then cancels what is left and stops the slots.
func shutdown(hs *http.Server, srv *server.Server, cancelRequests func(), timeout time.Duration, log zerolog.Logger) error {
	log.Info().Dur("timeout", timeout).Msg("shutting down: finishing the running requests")
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	cancelRequests()
	if errors.Is(err, context.DeadlineExceeded) {
		log.Warn().Msg("requests still running after the timeout were cancelled")
		hs.Close()
	}
	srv.Close()
	log.Info().Msg("stopped")
	return nil
}
