package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// llamaFlag is a llama-server 0.5.0 flag that kvtrim serve takes without
// acting on it: a llama-server flag is never refused by name, so that a
// command line written for llama-server starts kvtrim serve too.
type llamaFlag struct {
	// names are its spellings, dashes included, as llama-server's --help
	// writes them (the first long one is the flag's name).
	names string
	// value says it takes a value (--numa TYPE); the others are switches.
	value bool
	// effect says what kvtrim serve does with it.
	effect flagEffect
	// why is the line the log shows when it is given.
	why string
}

// flagEffect is what kvtrim serve does with a llama-server flag it does not
// implement.
type flagEffect int

const (
	// inert: the flag changes nothing kvtrim serve does (--offline: it
	// never downloads); an info line says so.
	inert flagEffect = iota
	// pending: a feature kvtrim serve does not have yet; a warning says
	// what is not applied.
	pending
	// unsafe: kvtrim serve refuses to start, since going on without the
	// feature would expose what the flag protects (TLS).
	unsafe
	// action: the flag makes llama-server print something and exit, so
	// kvtrim serve answers it and exits too (serveAction).
	action
)

// Reasons shared by groups of flags.
const (
	whyThreads   = "thread placement and polling are llama.cpp's defaults; kvtrim runs -t threads for prompts and generation"
	whyPlacement = "kvtrim loads the model with llama.cpp's default placement and offload; only -ngl and --no-repack apply"
	whyRope      = "kvtrim keeps the model's own RoPE and context length"
	whyDownload  = "kvtrim serve does not download models; give -m FILE"
	whySampler   = "kvtrim serve does not build this sampler yet (adaptive-p), or takes no --logit-bias default; requests' logit_bias works"
	whySpec      = "kvtrim serve has no speculative decoding; it decodes with the model alone"
	whyMedia     = "kvtrim serve takes text only: no multimodal projector"
	whyEmbed     = "kvtrim serve has no embeddings or reranking endpoints"
	whyAdapter   = "kvtrim serve loads no LoRA adapters or control vectors"
	whyLog       = "kvtrim logs with zerolog: --log-format and -v set it"
	whyTemplate  = "kvtrim serve has no reasoning budget yet"
	whyRouter    = "kvtrim serve serves one model; no router mode"
	whyUI        = "kvtrim serve has no web UI"
	whyTools     = "kvtrim serve has no built-in tools or MCP"
	whyCache     = "kvtrim keeps its own cache layout: one KV stream per slot, f16"
)

// llamaFlags are llama-server 0.5.0's flags that kvtrim serve takes without
// acting on them (testdata/serve/llama-server-flags.txt is the full list;
// the others kvtrim serve implements).
var llamaFlags = []llamaFlag{
	{"--version", false, action, "prints kvtrim's version"},
	{"-cl --cache-list", false, action, "kvtrim serve does not download models, so it has no model cache"},
	{"--completion-bash", false, action, "kvtrim serve has no completion script"},
	{"--list-devices", false, action, "lists the backends of the libllama kvtrim loads"},

	{"-tb --threads-batch", true, pending, whyThreads},
	{"-C --cpu-mask", true, pending, whyThreads},
	{"-Cr --cpu-range", true, pending, whyThreads},
	{"--cpu-strict", true, pending, whyThreads},
	{"--prio", true, pending, whyThreads},
	{"--poll", true, pending, whyThreads},
	{"-Cb --cpu-mask-batch", true, pending, whyThreads},
	{"-Crb --cpu-range-batch", true, pending, whyThreads},
	{"--cpu-strict-batch", true, pending, whyThreads},
	{"--prio-batch", true, pending, whyThreads},
	{"--poll-batch", true, pending, whyThreads},
	{"--threads-http", true, inert, "Go's HTTP server takes every connection; there is no HTTP thread pool to size"},

	{"--swa-full", false, pending, "kvtrim keeps llama.cpp's default sliding-window cache"},
	{"--rope-scaling", true, pending, whyRope},
	{"--rope-scale", true, pending, whyRope},
	{"--rope-freq-base", true, pending, whyRope},
	{"--rope-freq-scale", true, pending, whyRope},
	{"--yarn-orig-ctx", true, pending, whyRope},
	{"--yarn-ext-factor", true, pending, whyRope},
	{"--yarn-attn-factor", true, pending, whyRope},
	{"--yarn-beta-slow", true, pending, whyRope},
	{"--yarn-beta-fast", true, pending, whyRope},

	{"--perf", false, inert, "llama.cpp's timers are always on"},
	{"--no-perf", false, inert, "kvtrim reads llama.cpp's timers only for its stats"},
	{"-e --escape", false, inert, "escapes are for prompts on a command line; requests carry JSON"},
	{"--no-escape", false, inert, "escapes are for prompts on a command line; requests carry JSON"},
	{"--warmup", false, inert, "kvtrim serve does not warm up"},
	{"--no-warmup", false, inert, "kvtrim serve does not warm up"},
	{"--check-tensors", false, pending, "kvtrim does not check the model's tensor data at load"},

	{"-kvo --kv-offload", false, pending, whyPlacement},
	{"-nkvo --no-kv-offload", false, pending, whyPlacement},
	{"--no-host", false, pending, whyPlacement},
	{"--op-offload", false, pending, whyPlacement},
	{"--no-op-offload", false, pending, whyPlacement},
	{"-lm --load-mode", true, pending, whyPlacement},
	{"-lzm --lazy-mode", true, pending, whyPlacement},
	{"--numa", true, pending, whyPlacement},
	{"-dev --device", true, pending, whyPlacement},
	{"-ot --override-tensor", true, pending, whyPlacement},
	{"-cmoe --cpu-moe", false, pending, whyPlacement},
	{"-ncmoe --n-cpu-moe", true, pending, whyPlacement},
	{"-ncffn --n-cpu-ffn", true, pending, whyPlacement},
	{"-sm --split-mode", true, pending, whyPlacement},
	{"-ts --tensor-split", true, pending, whyPlacement},
	{"-mg --main-gpu", true, pending, whyPlacement},
	{"-fit --fit", true, pending, whyPlacement},
	{"-fitt --fit-target", true, pending, whyPlacement},
	{"-fitc --fit-ctx", true, pending, whyPlacement},
	{"--override-kv", true, pending, "kvtrim loads the model's metadata as it is"},

	{"-ctk --cache-type-k", true, pending, whyCache},
	{"-ctv --cache-type-v", true, pending, whyCache},
	{"-dt --defrag-thold", true, inert, "llama.cpp no longer defragments (the flag is deprecated)"},
	{"-kvu --kv-unified", false, pending, whyCache},
	{"-no-kvu --no-kv-unified", false, inert, "kvtrim keeps one KV stream per slot, as --no-kv-unified asks"},
	{"--kv-unified-per-slot", true, pending, whyCache},
	{"-ctxcp --ctx-checkpoints --swa-checkpoints", true, pending, "kvtrim serve keeps no context checkpoints"},
	{"-cms --checkpoint-min-step", true, pending, "kvtrim serve keeps no context checkpoints"},
	{"--cache-idle-slots", false, pending, "kvtrim serve's prompt cache (--cache-ram) keeps finished conversations, not idle slots"},
	{"--no-cache-idle-slots", false, inert, "kvtrim serve does not cache idle slots"},
	{"--cache-prompt", false, inert, "kvtrim serve reuses a slot's cached prefix (llama-server's default)"},
	{"--no-cache-prompt", false, pending, "kvtrim serve always reuses a slot's cached prefix"},
	{"--cache-reuse", true, pending, "kvtrim serve reuses only a common prefix, not shifted chunks"},
	{"-cb --cont-batching", false, inert, "kvtrim serve always batches the slots' decodes"},
	{"-nocb --no-cont-batching", false, pending, "kvtrim serve always batches the slots' decodes"},

	{"--lora", true, pending, whyAdapter},
	{"--lora-scaled", true, pending, whyAdapter},
	{"--control-vector", true, pending, whyAdapter},
	{"--control-vector-scaled", true, pending, whyAdapter},
	{"--control-vector-layer-range", true, pending, whyAdapter},
	{"--lora-init-without-apply", false, pending, whyAdapter},

	{"-mu --model-url", true, pending, whyDownload},
	{"-dr --docker-repo", true, pending, whyDownload},
	{"-hf -hfr --hf-repo", true, pending, whyDownload},
	{"-hff --hf-file", true, pending, whyDownload},
	{"-hft --hf-token", true, inert, "kvtrim serve does not download models, so it needs no token"},
	{"--offline", false, inert, "kvtrim serve never downloads anything"},

	{"--log-disable", false, pending, whyLog},
	{"--log-jsonl", false, pending, whyLog},
	{"--no-log-jsonl", false, inert, whyLog},
	{"--log-colors", true, inert, whyLog},
	{"-lv --verbosity --log-verbosity", true, pending, whyLog},
	{"--log-prefix", false, inert, whyLog},
	{"--no-log-prefix", false, inert, whyLog},
	{"--log-timestamps", false, inert, whyLog},
	{"--no-log-timestamps", false, inert, whyLog},
	{"--log-prompts-dir", true, pending, "kvtrim serve does not write prompts to files"},

	{"--ignore-eos", false, pending, "kvtrim serve stops at end-of-generation unless a request sets ignore_eos"},
	{"--adaptive-target", true, pending, whySampler},
	{"--adaptive-decay", true, pending, whySampler},
	{"-l --logit-bias", true, pending, whySampler},
	{"-bs --backend-sampling", false, pending, "kvtrim samples on the CPU, in Go"},
	{"-r --reverse-prompt", true, pending, "kvtrim serve stops only at a request's stop strings"},
	{"-sp --special", false, pending, "kvtrim serve leaves special tokens out of the text"},
	{"--spm-infill", false, pending, "kvtrim serve has no /infill endpoint"},

	{"--spec-draft-type-k -ctkd --cache-type-k-draft", true, pending, whySpec},
	{"--spec-draft-type-v -ctvd --cache-type-v-draft", true, pending, whySpec},
	{"--spec-draft-hf -hfd -hfrd --hf-repo-draft", true, pending, whySpec},
	{"--spec-draft-threads -td --threads-draft", true, pending, whySpec},
	{"--spec-draft-threads-batch -tbd --threads-batch-draft", true, pending, whySpec},
	{"--spec-draft-cpu-mask -Cd --cpu-mask-draft", true, pending, whySpec},
	{"--spec-draft-cpu-range -Crd --cpu-range-draft", true, pending, whySpec},
	{"--spec-draft-cpu-strict --cpu-strict-draft", true, pending, whySpec},
	{"--spec-draft-prio --prio-draft", true, pending, whySpec},
	{"--spec-draft-poll --poll-draft", true, pending, whySpec},
	{"--spec-draft-cpu-mask-batch -Cbd --cpu-mask-batch-draft", true, pending, whySpec},
	{"--spec-draft-cpu-strict-batch --cpu-strict-batch-draft", true, pending, whySpec},
	{"--spec-draft-prio-batch --prio-batch-draft", true, pending, whySpec},
	{"--spec-draft-poll-batch --poll-batch-draft", true, pending, whySpec},
	{"--spec-draft-override-tensor -otd --override-tensor-draft", true, pending, whySpec},
	{"--spec-draft-cpu-moe -cmoed --cpu-moe-draft", false, pending, whySpec},
	{"--spec-draft-n-cpu-moe --spec-draft-ncmoe -ncmoed --n-cpu-moe-draft", true, pending, whySpec},
	{"--spec-draft-n-max", true, pending, whySpec},
	{"--spec-draft-n-min", true, pending, whySpec},
	{"--spec-synth-len", true, pending, whySpec},
	{"--spec-synth-rates", true, pending, whySpec},
	{"--spec-draft-p-split --draft-p-split", true, pending, whySpec},
	{"--spec-draft-p-min --draft-p-min", true, pending, whySpec},
	{"--spec-draft-backend-sampling", false, pending, whySpec},
	{"--no-spec-draft-backend-sampling", false, inert, whySpec},
	{"--spec-draft-device -devd --device-draft", true, pending, whySpec},
	{"--spec-draft-ngl -ngld --gpu-layers-draft --n-gpu-layers-draft", true, pending, whySpec},
	{"--spec-draft-model -md --model-draft", true, pending, whySpec},
	{"--spec-type", true, pending, whySpec},
	{"--spec-ngram-mod-n-min", true, pending, whySpec},
	{"--spec-ngram-mod-n-max", true, pending, whySpec},
	{"--spec-ngram-mod-n-match", true, pending, whySpec},
	{"--spec-ngram-simple-size-n", true, pending, whySpec},
	{"--spec-ngram-simple-size-m", true, pending, whySpec},
	{"--spec-ngram-simple-min-hits", true, pending, whySpec},
	{"--spec-ngram-map-k-size-n", true, pending, whySpec},
	{"--spec-ngram-map-k-size-m", true, pending, whySpec},
	{"--spec-ngram-map-k-min-hits", true, pending, whySpec},
	{"--spec-ngram-map-k4v-size-n", true, pending, whySpec},
	{"--spec-ngram-map-k4v-size-m", true, pending, whySpec},
	{"--spec-ngram-map-k4v-min-hits", true, pending, whySpec},
	{"--draft --draft-n --draft-max", true, pending, whySpec},
	{"--draft-min --draft-n-min", true, pending, whySpec},
	{"--spec-ngram-size-n", true, pending, whySpec},
	{"--spec-ngram-size-m", true, pending, whySpec},
	{"--spec-ngram-min-hits", true, pending, whySpec},
	{"-lcs --lookup-cache-static", true, pending, whySpec},
	{"-lcd --lookup-cache-dynamic", true, pending, whySpec},
	{"--spec-default", false, pending, whySpec},

	{"--pooling", true, pending, whyEmbed},
	{"--embedding --embeddings", false, pending, whyEmbed},
	{"--rerank --reranking", false, pending, whyEmbed},
	{"--embd-normalize", true, pending, whyEmbed},
	{"-mm --mmproj", true, pending, whyMedia},
	{"-mmu --mmproj-url", true, pending, whyMedia},
	{"--mmproj-auto", false, pending, whyMedia},
	{"--no-mmproj --no-mmproj-auto", false, inert, whyMedia},
	{"--mmproj-offload", false, pending, whyMedia},
	{"--no-mmproj-offload", false, inert, whyMedia},
	{"-mmdev --mmproj-device", true, pending, whyMedia},
	{"--image-min-tokens", true, pending, whyMedia},
	{"--image-max-tokens", true, pending, whyMedia},
	{"--mtmd-batch-max-tokens", true, pending, whyMedia},
	{"--video-fps", true, pending, whyMedia},
	{"--video-timestamp-interval", true, pending, whyMedia},
	{"--video-ffmpeg-dir", true, pending, whyMedia},
	{"--media-path", true, pending, whyMedia},

	{"--reuse-port", false, pending, "kvtrim serve listens without SO_REUSEPORT"},
	{"--path", true, pending, whyUI},
	{"--api-prefix", true, pending, "kvtrim serve answers at the root path only"},
	{"--ui --webui", false, pending, whyUI},
	{"--ui-config --webui-config", true, inert, whyUI},
	{"--ui-config-file --webui-config-file", true, inert, whyUI},
	{"--tools", true, pending, whyTools},
	{"--tools-runtime", true, pending, whyTools},
	{"--mcp-servers-config", true, pending, whyTools},
	{"--mcp-servers-json", true, pending, whyTools},
	{"-ag --agent", false, pending, whyTools},
	{"-no-ag --no-agent", false, inert, whyTools},
	{"--ssl-key-file", true, unsafe, "kvtrim serve has no TLS: it would serve plain HTTP; put a TLS proxy in front of it instead"},
	{"--ssl-cert-file", true, unsafe, "kvtrim serve has no TLS: it would serve plain HTTP; put a TLS proxy in front of it instead"},
	{"--sse-ping-interval", true, pending, "kvtrim serve sends no SSE pings"},

	{"--models-dir", true, pending, whyRouter},
	{"--models-preset", true, pending, whyRouter},
	{"--models-max", true, pending, whyRouter},
	{"--models-autoload", false, pending, whyRouter},
	{"--no-models-autoload", false, inert, whyRouter},

	{"--reasoning-budget", true, pending, whyTemplate},
	{"--reasoning-budget-message", true, pending, whyTemplate},
	{"--skip-chat-parsing", false, pending, "kvtrim serve always reads tool calls out of answers when a request offers tools"},
	{"--no-skip-chat-parsing", false, pending, whyTemplate},

	{"--embd-gemma-default", false, pending, whyDownload},
	{"--fim-qwen-1.5b-default", false, pending, whyDownload},
	{"--fim-qwen-3b-default", false, pending, whyDownload},
	{"--fim-qwen-7b-default", false, pending, whyDownload},
	{"--fim-qwen-7b-spec", false, pending, whyDownload},
	{"--fim-qwen-14b-spec", false, pending, whyDownload},
	{"--fim-qwen-30b-default", false, pending, whyDownload},
	{"--gpt-oss-20b-default", false, pending, whyDownload},
	{"--gpt-oss-120b-default", false, pending, whyDownload},
	{"--vision-gemma-4b-default", false, pending, whyDownload},
	{"--vision-gemma-12b-default", false, pending, whyDownload},
}

// llamaAliases are llama-server's other spellings of flags kvtrim serve
// implements, and the names kvtrim registers them under.
var llamaAliases = map[string]string{
	"predict":     "n-predict",
	"temperature": "temp",
	"gpu-layers":  "n-gpu-layers",
	"ngl":         "n-gpu-layers",
	"nr":          "no-repack",
	"log-verbose": "verbose",
	"to":          "timeout",
	"ub":          "ubatch-size",
	"fa":          "flash-attn",
	"np":          "parallel",
	"cram":        "cache-ram",
	"sps":         "slot-prompt-similarity",
	"no-ui":       "no-webui",
	"rea":         "reasoning",
	"jf":          "json-schema-file",
	// Samplers.
	"top-nsigma":  "top-n-sigma",
	"typical-p":   "typical",
	"sampler-seq": "sampling-seq",
	// The web UI's MCP proxy.
	"webui-mcp-proxy":    "ui-mcp-proxy",
	"no-webui-mcp-proxy": "no-ui-mcp-proxy",
}

// spellings are a llamaFlag's names without dashes: the long ones, those
// written with two dashes first, and the one-letter one if any.
func (l llamaFlag) spellings() (long []string, short string) {
	var single []string
	for _, n := range strings.Fields(l.names) {
		bare := strings.TrimLeft(n, "-")
		switch {
		case len(bare) == 1:
			short = bare
		case strings.HasPrefix(n, "--"):
			long = append(long, bare)
		default:
			single = append(single, bare)
		}
	}
	return append(long, single...), short
}

// acceptedFlags are the llamaFlags registered in a flag set, for reading
// which were given once it is parsed.
type acceptedFlags struct {
	fs    *pflag.FlagSet
	flags []llamaFlag
}

// registerLlamaFlags registers llamaFlags in fs, hidden from --help
// (docs/SERVE.md lists them), and llama-server's aliases of kvtrim's own
// flags; each flag's other spellings name it through fs's normalisation,
// so -hf, --hf-repo and -hfr are one flag. Register kvtrim's own flags
// first.
func registerLlamaFlags(fs *pflag.FlagSet) *acceptedFlags {
	alias := map[string]string{}
	for k, v := range llamaAliases {
		alias[k] = v
	}
	a := &acceptedFlags{fs: fs}
	for _, l := range llamaFlags {
		long, short := l.spellings()
		name := long[0]
		if fs.Lookup(name) != nil {
			continue // kvtrim's own (--log-file)
		}
		for _, other := range long[1:] {
			alias[other] = name
		}
		if short != "" && fs.ShorthandLookup(short) != nil {
			short = ""
		}
		if l.value {
			fs.StringP(name, short, "", l.why)
		} else {
			fs.BoolP(name, short, false, l.why)
		}
		fs.MarkHidden(name)
		a.flags = append(a.flags, l)
	}
	fs.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		name = strings.ReplaceAll(name, "_", "-") // llama.cpp takes --backend_sampling too
		if to, ok := alias[name]; ok {
			return pflag.NormalizedName(to)
		}
		return pflag.NormalizedName(name)
	})
	return a
}

// given returns the accepted flags the command line or the environment
// gave, with the spelling to show.
func (a *acceptedFlags) given() []llamaFlag {
	var out []llamaFlag
	for _, l := range a.flags {
		long, _ := l.spellings()
		if f := a.fs.Lookup(long[0]); f != nil && f.Changed {
			out = append(out, l)
		}
	}
	return out
}

// flagName is the flag's first long spelling, with its dashes.
func (l llamaFlag) flagName() string {
	long, _ := l.spellings()
	return "--" + long[0]
}

// unsafeFlag returns the error for the first given flag kvtrim serve
// refuses to start with, if any.
func (a *acceptedFlags) unsafeFlag() error {
	for _, l := range a.given() {
		if l.effect == unsafe {
			return usageErrorf("%s: %s", l.flagName(), l.why)
		}
	}
	return nil
}

// action returns the given flag that asks for an answer instead of a
// server (--version, --list-devices, ...), or nil.
func (f *serveFlags) action() *llamaFlag {
	for _, l := range f.accepted.given() {
		if l.effect == action {
			return &l
		}
	}
	return nil
}

// serveAction answers a flag that makes llama-server print something and
// exit.
func serveAction(ctx context.Context, l llamaFlag, c *common, stdout, stderr io.Writer) error {
	switch l.flagName() {
	case "--version":
		return cmdVersion(ctx, nil, stdout, stderr)
	case "--list-devices":
		_, lib, err := c.open(ctx, nil, stderr, false)
		defer c.close()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Available devices (backends of %s):\n", lib.Dir)
		for _, b := range lib.Backends() {
			fmt.Fprintf(stdout, "  %s\n", b)
		}
		return nil
	}
	fmt.Fprintf(stdout, "%s: %s\n", l.flagName(), l.why)
	return nil
}
