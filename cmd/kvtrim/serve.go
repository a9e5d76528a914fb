package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/internal/jsongrammar"
	"github.com/kvtrim/kvtrim/internal/server"
)

// serveFlags are kvtrim serve's flags, spelled as llama-server spells them,
// plus kvtrim's --kv-* compression flags.
type serveFlags struct {
	g        genFlags       // model, context, sampling defaults and compression
	accepted *acceptedFlags // llama-server's flags kvtrim serve does not implement
	cors     server.CORS
	tags     string // --tags
	// slotSavePath is --slot-save-path.
	slotSavePath string
	// Penalties' defaults (--repeat-last-n, --repeat-penalty, ...).
	repeatLastN                                      int
	repeatPenalty, presencePenalty, frequencyPenalty float32
	// corsCredentials and noCorsCredentials are --cors-credentials and
	// its negative; the negative wins.
	corsCredentials, noCorsCredentials bool
	parallel                           int
	host                               string
	port                               int
	apiKey                             string
	apiKeyFile                         string
	alias                              string
	timeout                            int
	queue                              int
	cacheRAM                           int
	similarity                         float64
	seed                               int64
	metrics                            bool
	slots                              bool
	noSlots                            bool
	contextShift, noContextShift       bool
	keep                               int
	sleepIdle                          int
	grammar, grammarFile               string
	samplers                           sampling
	mcpProxy, noMCPProxy               bool
	props                              bool
	noWebUI                            bool
	chatTemplate, chatTemplateFile     string
	jinja, noJinja                     bool
	templateKwargs, reasoning          string
	reasoningFormat, reasoningEffort   string
	preserve, noPreserve               bool
	prefill, noPrefill                 bool
	jsonSchema, jsonSchemaFile         string
}

func (f *serveFlags) register(fs *pflag.FlagSet) {
	g := &f.g
	g.registerModel(fs)
	fs.IntVar(&f.parallel, "parallel", 1, "slots: requests served at once, each with ctx-size/parallel cells (-np)")
	fs.StringVar(&f.host, "host", "127.0.0.1", "address to listen on")
	fs.IntVar(&f.port, "port", 8080, "port to listen on (0: any free one)")
	fs.StringVar(&f.apiKey, "api-key", "", "API key(s), comma-separated, required on every endpoint but /health")
	fs.StringVar(&f.apiKeyFile, "api-key-file", "", "file with one API key per line; lines starting with # are comments")
	fs.StringVarP(&f.alias, "alias", "a", "", "model names, comma-separated: the first in sorted order names it in responses (default: the model's path)")
	fs.StringVar(&f.tags, "tags", "", "model tags, comma-separated (informational: /v1/models lists them)")
	fs.StringVar(&f.slotSavePath, "slot-save-path", "", "folder for POST /slots/{id}?action=save|restore|erase (a compressed slot is saved as it is); empty: off")
	fs.IntVar(&f.timeout, "timeout", 600, "seconds to read a request, to write each piece of an answer (a client that stops reading loses its slot), and to let running requests finish on shutdown")
	fs.IntVar(&f.queue, "queue", 0, "requests that may wait for a slot; past them a request gets 503 with Retry-After (0: no bound, as llama-server)")
	fs.IntVar(&f.cacheRAM, "cache-ram", server.DefaultPromptReuse().CacheMiB, "MiB of host memory for prompts slots gave up, which later requests continuing them load instead of decoding (-cram; 0: off, -1: no limit)")
	fs.Float64Var(&f.similarity, "slot-prompt-similarity", server.DefaultPromptReuse().Similarity, "share of a prompt a free slot's cache must hold for the request to go to that slot, not the least recently used (-sps; 0: off)")
	fs.IntVarP(&g.nPredict, "n-predict", "n", -1, "default tokens to generate (-1: until end of text or a full context)")
	fs.Int64VarP(&f.seed, "seed", "s", -1, "default sampling seed (-1: random)")
	fs.Float32Var(&g.temp, "temp", 0.8, "default temperature (0: greedy)")
	fs.IntVar(&g.topK, "top-k", 40, "default top-k (0: off)")
	fs.Float32Var(&g.topP, "top-p", 0.95, "default top-p (1: off)")
	fs.Float32Var(&g.minP, "min-p", 0.05, "default min-p (0: off)")
	fs.IntVar(&f.repeatLastN, "repeat-last-n", 64, "default: last tokens the penalties look at, the prompt's included (0: off, -1: the slot's context)")
	fs.Float32Var(&f.repeatPenalty, "repeat-penalty", 1, "default repetition penalty (1: off)")
	fs.Float32Var(&f.presencePenalty, "presence-penalty", 0, "default presence penalty (0: off)")
	fs.Float32Var(&f.frequencyPenalty, "frequency-penalty", 0, "default frequency penalty (0: off)")
	fs.BoolVar(&f.metrics, "metrics", false, "enable GET /metrics (Prometheus)")
	fs.BoolVar(&f.contextShift, "context-shift", false, "when a generation fills its slot, drop half of what follows --keep and go on (llama-server's context shift), instead of stopping")
	fs.BoolVar(&f.noContextShift, "no-context-shift", false, "stop a generation that fills its slot (the default)")
	fs.IntVar(&f.keep, "keep", 0, "tokens of the prompt a context shift keeps (-1: all of it; requests' n_keep)")
	fs.IntVar(&f.sleepIdle, "sleep-idle-seconds", -1, "free the model and the slots after this many seconds without a request, and load them again on the next (-1: never)")
	fs.BoolVar(&f.mcpProxy, "ui-mcp-proxy", false, "enable /cors-proxy?url=URL, which llama-server's web UI uses to reach MCP servers; it forwards only x-llama-server-proxy-header-* headers (--webui-mcp-proxy)")
	fs.BoolVar(&f.noMCPProxy, "no-ui-mcp-proxy", false, "disable /cors-proxy (the default; --no-webui-mcp-proxy)")
	f.samplers.register(fs)
	fs.StringVar(&f.grammar, "grammar", "", "default GBNF grammar every answer must follow (requests' grammar overrides it)")
	fs.StringVar(&f.grammarFile, "grammar-file", "", "file holding the default GBNF grammar")
	fs.BoolVar(&f.slots, "slots", true, "enable GET /slots")
	fs.BoolVar(&f.noSlots, "no-slots", false, "disable GET /slots")
	fs.BoolVar(&f.props, "props", false, `enable POST /props, whose "kvtrim" object changes the default compression`)
	fs.BoolVar(&f.noWebUI, "no-webui", false, "accepted for llama-server's sake; kvtrim has no web UI")
	fs.StringVar(&f.cors.Origins, "cors-origins", "*", `Access-Control-Allow-Origin: "*" (every origin, echoed with credentials), "localhost" (only origins on this machine), or a value to send`)
	fs.StringVar(&f.cors.Methods, "cors-methods", "GET, POST, DELETE, OPTIONS", "methods a CORS preflight allows")
	fs.StringVar(&f.cors.Headers, "cors-headers", "*", "headers a CORS preflight allows")
	fs.BoolVar(&f.corsCredentials, "cors-credentials", true, "allow credentials in CORS requests")
	fs.BoolVar(&f.noCorsCredentials, "no-cors-credentials", false, "do not allow credentials in CORS requests")
	fs.StringVar(&f.chatTemplate, "chat-template", "", "chat template name or text (default: the model's, else chatml)")
	fs.StringVar(&f.chatTemplateFile, "chat-template-file", "", "file holding the chat template's text (a Jinja template, with --jinja)")
	fs.BoolVar(&f.jinja, "jinja", true, "render chats with the Jinja engine: the model's own template (or --chat-template's text) run as Jinja (the default, as in llama-server; given, a template that does not compile fails the start)")
	fs.BoolVar(&f.noJinja, "no-jinja", false, "render chats with llama.cpp's built-in templates")
	fs.StringVar(&f.templateKwargs, "chat-template-kwargs", "", `variables for the Jinja template, a JSON object ('{"key":"value"}'); requests' chat_template_kwargs override them`)
	fs.StringVar(&f.reasoning, "reasoning", "auto", "thinking in the chat: on, off or auto (the template's default); sets the template's enable_thinking")
	fs.StringVar(&f.reasoningEffort, "reasoning-effort", "default", "reasoning effort given to the chat template (reasoning_effort): default keeps the template's, or a level such as low, medium, high")
	fs.BoolVar(&f.preserve, "reasoning-preserve", true, "keep earlier answers' reasoning in the prompt, for templates that can (preserve_reasoning; the default)")
	fs.BoolVar(&f.noPreserve, "no-reasoning-preserve", false, "drop earlier answers' reasoning from the prompt, for templates that can")
	fs.StringVar(&f.reasoningFormat, "reasoning-format", "auto", "where a thinking model's reasoning goes: auto or deepseek (reasoning_content), deepseek-legacy (there and in the content), none (the content)")
	fs.BoolVar(&f.prefill, "prefill-assistant", true, "continue a final assistant message instead of answering after it (the default)")
	fs.BoolVar(&f.noPrefill, "no-prefill-assistant", false, "render a final assistant message as a finished turn")
	fs.StringVarP(&f.jsonSchema, "json-schema", "j", "", "default JSON Schema every answer must follow, as a grammar (requests' json_schema or grammar override it)")
	fs.StringVar(&f.jsonSchemaFile, "json-schema-file", "", "file holding the default JSON Schema")
	fs.StringVar(&g.comp.Policy, "kv-policy", "none", "default KV compression of every request: "+strings.Join(kvtrim.PolicyNames(), ", "))
	fs.IntVar(&g.comp.Budget, "kv-budget", 0, "cells to keep, the window included (prompt-time policies, tova)")
	fs.Float64Var(&g.comp.Ratio, "kv-ratio", 0, "or: the share of the prompt to keep, in (0, 1]")
	g.registerPolicyOptions(fs)
	fs.IntVar(&g.comp.Window, "kv-window", 0, "observation window (same as --window)")
	fs.StringVar(&g.comp.DecodePolicy, "kv-decode-policy", "", "after a prompt-time policy: "+strings.Join(kvtrim.DecodePolicyNames(), ", ")+" while generating (same as --decode-policy)")
}

// llamaVar is an environment variable llama-server reads for a flag the
// command line leaves out: every "(env: NAME)" of its --help
// (testdata/serve/llama-server-env.txt, from testdata/serve/record-env.sh).
type llamaVar struct {
	name string
	// flag is the flag's long name (no dashes) as kvtrim serve registers
	// it (llamaFlags' included).
	flag string
	// neg is the flag's negative (--no-slots for --slots), if it has one.
	// The value is then a boolean, and, as in llama.cpp, the variable's
	// LLAMA_ARG_NO_ twin (LLAMA_ARG_NO_ENDPOINT_SLOTS), set to anything,
	// means false and wins over the variable.
	neg string
	// void marks a flag without a value (--metrics): a true value gives
	// it, any other value nothing (llama.cpp's rule).
	void bool
}

// noName is the LLAMA_ARG_NO_ twin of a boolean's variable, spelled as
// llama.cpp spells it (common/arg.cpp, common_arg::get_value_from_env).
func (v llamaVar) noName() string { return strings.ReplaceAll(v.name, "LLAMA_ARG_", "LLAMA_ARG_NO_") }

// get returns the variable set (the twin first), and its value.
func (v llamaVar) get(lookup func(string) (string, bool)) (name, value string, ok bool) {
	if v.neg != "" {
		if _, ok := lookup(v.noName()); ok {
			return v.noName(), "0", true
		}
	}
	value, ok = lookup(v.name)
	return v.name, value, ok
}

// hfToken is the one variable kvtrim serve does not read: it is only a
// download's credential, kvtrim downloads no model (-hf, -mu, -dr, ...
// are not applied), and it is often set for other programs.
const hfToken = "HF_TOKEN"

// llamaEnv lists llama-server 0.5.0's environment variables: those of the
// flags kvtrim serve implements, then those of the flags it takes without
// implementing them (llamaFlags); each fills its flag when the command
// line does not give it. Two more of kvtrim's own come last, read as
// before: LLAMA_ARG_API_KEY and LLAMA_ARG_NO_WEBUI.
func llamaEnv() []llamaVar {
	return []llamaVar{
		// supported
		{name: "LLAMA_ARG_MODEL", flag: "model"},
		{name: "LLAMA_ARG_CTX_SIZE", flag: "ctx-size"},
		{name: "LLAMA_ARG_N_PARALLEL", flag: "parallel"},
		{name: "LLAMA_ARG_BATCH", flag: "batch-size"},
		{name: "LLAMA_ARG_UBATCH", flag: "ubatch-size"},
		{name: "LLAMA_ARG_THREADS", flag: "threads"},
		{name: "LLAMA_ARG_N_GPU_LAYERS", flag: "n-gpu-layers"},
		{name: "LLAMA_ARG_RPC", flag: "rpc"}, // in llama-server's help where it is built with RPC
		{name: "LLAMA_ARG_FLASH_ATTN", flag: "flash-attn"},
		{name: "LLAMA_ARG_HOST", flag: "host"},
		{name: "LLAMA_ARG_PORT", flag: "port"},
		{name: "LLAMA_API_KEY", flag: "api-key"},
		{name: "LLAMA_ARG_API_KEY_FILE", flag: "api-key-file"},
		{name: "LLAMA_ARG_ALIAS", flag: "alias"},
		{name: "LLAMA_ARG_TIMEOUT", flag: "timeout"},
		{name: "LLAMA_ARG_N_PREDICT", flag: "n-predict"},
		{name: "LLAMA_ARG_TEMPERATURE", flag: "temp"},
		{name: "LLAMA_ARG_TOP_K", flag: "top-k"},
		{name: "LLAMA_ARG_TOP_P", flag: "top-p"},
		{name: "LLAMA_ARG_MIN_P", flag: "min-p"},
		{name: "LLAMA_ARG_ENDPOINT_METRICS", flag: "metrics", void: true},
		{name: "LLAMA_ARG_ENDPOINT_PROPS", flag: "props", void: true},
		{name: "LLAMA_ARG_ENDPOINT_SLOTS", flag: "slots", neg: "no-slots"},
		{name: "LLAMA_ARG_UI", flag: "webui", neg: "no-webui"}, // false only: kvtrim has no web UI
		{name: "LLAMA_ARG_CHAT_TEMPLATE", flag: "chat-template"},
		{name: "LLAMA_ARG_LOG_FILE", flag: "log-file"},
		// taken, not implemented (llamaFlags): context, cache and memory
		{name: "LLAMA_ARG_SWA_FULL", flag: "swa-full"},
		{name: "LLAMA_ARG_PERF", flag: "perf", neg: "no-perf"},
		{name: "LLAMA_ARG_ROPE_SCALING_TYPE", flag: "rope-scaling"},
		{name: "LLAMA_ARG_ROPE_SCALE", flag: "rope-scale"},
		{name: "LLAMA_ARG_ROPE_FREQ_BASE", flag: "rope-freq-base"},
		{name: "LLAMA_ARG_ROPE_FREQ_SCALE", flag: "rope-freq-scale"},
		{name: "LLAMA_ARG_YARN_ORIG_CTX", flag: "yarn-orig-ctx"},
		{name: "LLAMA_ARG_YARN_EXT_FACTOR", flag: "yarn-ext-factor"},
		{name: "LLAMA_ARG_YARN_ATTN_FACTOR", flag: "yarn-attn-factor"},
		{name: "LLAMA_ARG_YARN_BETA_SLOW", flag: "yarn-beta-slow"},
		{name: "LLAMA_ARG_YARN_BETA_FAST", flag: "yarn-beta-fast"},
		{name: "LLAMA_ARG_KV_OFFLOAD", flag: "kv-offload", neg: "no-kv-offload"},
		{name: "LLAMA_ARG_REPACK", flag: "repack", neg: "no-repack"},
		{name: "LLAMA_ARG_NO_HOST", flag: "no-host", void: true},
		{name: "LLAMA_ARG_CACHE_TYPE_K", flag: "cache-type-k"},
		{name: "LLAMA_ARG_CACHE_TYPE_V", flag: "cache-type-v"},
		{name: "LLAMA_ARG_DEFRAG_THOLD", flag: "defrag-thold"},
		{name: "LLAMA_ARG_KV_UNIFIED_PER_SLOT", flag: "kv-unified-per-slot", void: true},
		{name: "LLAMA_ARG_CTX_CHECKPOINTS", flag: "ctx-checkpoints"},
		{name: "LLAMA_ARG_CHECKPOINT_MIN_SPACING_NT", flag: "checkpoint-min-step"},
		{name: "LLAMA_ARG_CACHE_RAM", flag: "cache-ram"},
		{name: "LLAMA_ARG_KV_UNIFIED", flag: "kv-unified", neg: "no-kv-unified"},
		{name: "LLAMA_ARG_CACHE_IDLE_SLOTS", flag: "cache-idle-slots", neg: "no-cache-idle-slots"},
		{name: "LLAMA_ARG_CONTEXT_SHIFT", flag: "context-shift", neg: "no-context-shift"},
		{name: "LLAMA_ARG_CONT_BATCHING", flag: "cont-batching", neg: "no-cont-batching"},
		{name: "LLAMA_ARG_CACHE_PROMPT", flag: "cache-prompt", neg: "no-cache-prompt"},
		{name: "LLAMA_ARG_CACHE_REUSE", flag: "cache-reuse"},
		// taken, not implemented (llamaFlags): model sources, loading and devices
		{name: "LLAMA_ARG_LOAD_MODE", flag: "load-mode"},
		{name: "LLAMA_ARG_LAZY_MODE", flag: "lazy-mode"},
		{name: "LLAMA_ARG_NUMA", flag: "numa"},
		{name: "LLAMA_ARG_DEVICE", flag: "device"},
		{name: "LLAMA_ARG_OVERRIDE_TENSOR", flag: "override-tensor"},
		{name: "LLAMA_ARG_CPU_MOE", flag: "cpu-moe", void: true},
		{name: "LLAMA_ARG_N_CPU_MOE", flag: "n-cpu-moe"},
		{name: "LLAMA_ARG_N_CPU_FFN", flag: "n-cpu-ffn"},
		{name: "LLAMA_ARG_SPLIT_MODE", flag: "split-mode"},
		{name: "LLAMA_ARG_TENSOR_SPLIT", flag: "tensor-split"},
		{name: "LLAMA_ARG_MAIN_GPU", flag: "main-gpu"},
		{name: "LLAMA_ARG_FIT", flag: "fit"},
		{name: "LLAMA_ARG_FIT_TARGET", flag: "fit-target"},
		{name: "LLAMA_ARG_FIT_CTX", flag: "fit-ctx"},
		{name: "LLAMA_ARG_MODEL_URL", flag: "model-url"},
		{name: "LLAMA_ARG_DOCKER_REPO", flag: "docker-repo"},
		{name: "LLAMA_ARG_HF_REPO", flag: "hf-repo"},
		{name: "LLAMA_ARG_HF_FILE", flag: "hf-file"},
		{name: hfToken, flag: "hf-token"}, // not read: see hfToken
		{name: "LLAMA_ARG_OFFLINE", flag: "offline", void: true},
		{name: "LLAMA_ARG_MODELS_DIR", flag: "models-dir"},
		{name: "LLAMA_ARG_MODELS_PRESET", flag: "models-preset"},
		{name: "LLAMA_ARG_MODELS_MAX", flag: "models-max"},
		{name: "LLAMA_ARG_MODELS_AUTOLOAD", flag: "models-autoload", neg: "no-models-autoload"},
		// taken, not implemented (llamaFlags): llama.cpp's logging
		{name: "LLAMA_ARG_LOG_JSONL", flag: "log-jsonl", neg: "no-log-jsonl"},
		{name: "LLAMA_ARG_LOG_COLORS", flag: "log-colors"},
		{name: "LLAMA_ARG_LOG_VERBOSITY", flag: "log-verbosity"},
		{name: "LLAMA_ARG_LOG_PREFIX", flag: "log-prefix", neg: "no-log-prefix"},
		{name: "LLAMA_ARG_LOG_TIMESTAMPS", flag: "log-timestamps", neg: "no-log-timestamps"},
		// taken, not implemented (llamaFlags): samplers kvtrim does not build
		{name: "LLAMA_ARG_REPEAT_PENALTY", flag: "repeat-penalty"},
		{name: "LLAMA_ARG_PRESENCE_PENALTY", flag: "presence-penalty"},
		{name: "LLAMA_ARG_FREQUENCY_PENALTY", flag: "frequency-penalty"},
		{name: "LLAMA_ARG_BACKEND_SAMPLING", flag: "backend-sampling", void: true},
		// taken, not implemented (llamaFlags): speculative decoding
		{name: "LLAMA_ARG_SPEC_DRAFT_CACHE_TYPE_K", flag: "spec-draft-type-k"},
		{name: "LLAMA_ARG_SPEC_DRAFT_CACHE_TYPE_V", flag: "spec-draft-type-v"},
		{name: "LLAMA_ARG_SPEC_DRAFT_HF_REPO", flag: "spec-draft-hf"},
		{name: "LLAMA_ARG_SPEC_DRAFT_CPU_MOE", flag: "spec-draft-cpu-moe", void: true},
		{name: "LLAMA_ARG_SPEC_DRAFT_N_CPU_MOE", flag: "spec-draft-n-cpu-moe"},
		{name: "LLAMA_ARG_SPEC_DRAFT_N_MAX", flag: "spec-draft-n-max"},
		{name: "LLAMA_ARG_SPEC_DRAFT_N_MIN", flag: "spec-draft-n-min"},
		{name: "LLAMA_ARG_SPEC_SYNTH_LEN", flag: "spec-synth-len"},
		{name: "LLAMA_ARG_SPEC_SYNTH_RATES", flag: "spec-synth-rates"},
		{name: "LLAMA_ARG_SPEC_DRAFT_P_SPLIT", flag: "spec-draft-p-split"},
		{name: "LLAMA_ARG_SPEC_DRAFT_P_MIN", flag: "spec-draft-p-min"},
		{name: "LLAMA_ARG_SPEC_DRAFT_BACKEND_SAMPLING", flag: "spec-draft-backend-sampling", neg: "no-spec-draft-backend-sampling"},
		{name: "LLAMA_ARG_N_GPU_LAYERS_DRAFT", flag: "spec-draft-ngl"},
		{name: "LLAMA_ARG_SPEC_DRAFT_MODEL", flag: "spec-draft-model"},
		{name: "LLAMA_ARG_SPEC_TYPE", flag: "spec-type"},
		{name: "LLAMA_ARG_DRAFT_MAX", flag: "draft-max"},
		{name: "LLAMA_ARG_DRAFT_MIN", flag: "draft-min"},
		// taken, not implemented (llamaFlags): embeddings, multimodal
		{name: "LLAMA_ARG_POOLING", flag: "pooling"},
		{name: "LLAMA_ARG_EMBEDDINGS", flag: "embedding", void: true},
		{name: "LLAMA_ARG_RERANKING", flag: "reranking", void: true},
		{name: "LLAMA_ARG_MMPROJ", flag: "mmproj"},
		{name: "LLAMA_ARG_MMPROJ_URL", flag: "mmproj-url"},
		{name: "LLAMA_ARG_MMPROJ_AUTO", flag: "mmproj-auto", neg: "no-mmproj-auto"},
		{name: "LLAMA_ARG_MMPROJ_OFFLOAD", flag: "mmproj-offload", neg: "no-mmproj-offload"},
		{name: "MTMD_BACKEND_DEVICE", flag: "mmproj-device"},
		{name: "LLAMA_ARG_IMAGE_MIN_TOKENS", flag: "image-min-tokens"},
		{name: "LLAMA_ARG_IMAGE_MAX_TOKENS", flag: "image-max-tokens"},
		{name: "LLAMA_ARG_MTMD_BATCH_MAX_TOKENS", flag: "mtmd-batch-max-tokens"},
		{name: "LLAMA_ARG_VIDEO_FPS", flag: "video-fps"},
		{name: "LLAMA_ARG_VIDEO_TIMESTAMP_INTERVAL", flag: "video-timestamp-interval"},
		{name: "LLAMA_ARG_VIDEO_FFMPEG_DIR", flag: "video-ffmpeg-dir"},
		// taken, not implemented (llamaFlags): HTTP, web UI and tools
		{name: "LLAMA_ARG_TAGS", flag: "tags"},
		{name: "LLAMA_ARG_REUSE_PORT", flag: "reuse-port", void: true},
		{name: "LLAMA_ARG_STATIC_PATH", flag: "path"},
		{name: "LLAMA_ARG_CORS_ORIGINS", flag: "cors-origins"},
		{name: "LLAMA_ARG_CORS_METHODS", flag: "cors-methods"},
		{name: "LLAMA_ARG_CORS_HEADERS", flag: "cors-headers"},
		{name: "LLAMA_ARG_CORS_CREDENTIALS", flag: "cors-credentials", neg: "no-cors-credentials"},
		{name: "LLAMA_ARG_API_PREFIX", flag: "api-prefix"},
		{name: "LLAMA_ARG_UI_CONFIG", flag: "ui-config"},
		{name: "LLAMA_ARG_UI_CONFIG_FILE", flag: "ui-config-file"},
		{name: "LLAMA_ARG_UI_MCP_PROXY", flag: "ui-mcp-proxy", neg: "no-ui-mcp-proxy"},
		{name: "LLAMA_ARG_TOOLS", flag: "tools"},
		{name: "LLAMA_ARG_TOOLS_RUNTIME", flag: "tools-runtime"},
		{name: "LLAMA_ARG_MCP_SERVERS_CONFIG", flag: "mcp-servers-config"},
		{name: "LLAMA_ARG_MCP_SERVERS_JSON", flag: "mcp-servers-json"},
		{name: "LLAMA_ARG_AGENT", flag: "agent", neg: "no-agent"},
		{name: "LLAMA_ARG_SSL_KEY_FILE", flag: "ssl-key-file"},
		{name: "LLAMA_ARG_SSL_CERT_FILE", flag: "ssl-cert-file"},
		{name: "LLAMA_ARG_SSE_PING_INTERVAL", flag: "sse-ping-interval"},
		{name: "LLAMA_ARG_THREADS_HTTP", flag: "threads-http"},
		{name: "LLAMA_ARG_CHAT_TEMPLATE_KWARGS", flag: "chat-template-kwargs"},
		{name: "LLAMA_ARG_CHAT_TEMPLATE_FILE", flag: "chat-template-file"},
		{name: "LLAMA_ARG_JINJA", flag: "jinja", neg: "no-jinja"},
		{name: "LLAMA_ARG_REASONING", flag: "reasoning"},
		{name: "LLAMA_ARG_THINK", flag: "reasoning-format"},
		{name: "LLAMA_ARG_REASONING_EFFORT", flag: "reasoning-effort"},
		{name: "LLAMA_ARG_REASONING_PRESERVE", flag: "reasoning-preserve", neg: "no-reasoning-preserve"},
		// taken, not implemented (llamaFlags): reasoning and tools
		{name: "LLAMA_ARG_THINK_BUDGET", flag: "reasoning-budget"},
		{name: "LLAMA_ARG_THINK_BUDGET_MESSAGE", flag: "reasoning-budget-message"},
		{name: "LLAMA_ARG_SKIP_CHAT_PARSING", flag: "skip-chat-parsing", neg: "no-skip-chat-parsing"},
		{name: "LLAMA_ARG_PREFILL_ASSISTANT", flag: "prefill-assistant", neg: "no-prefill-assistant"},
		// kvtrim's own, from before it read LLAMA_API_KEY and LLAMA_ARG_UI
		{name: "LLAMA_ARG_API_KEY", flag: "api-key"},
		{name: "LLAMA_ARG_NO_WEBUI", flag: "no-webui", void: true},
	}
}

// fromEnv fills the flags the command line left unset from llama-server's
// environment variables, and refuses a variable whose flag kvtrim serve
// does not know.
func fromEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	for _, e := range llamaEnv() {
		name, value, ok := e.get(lookup)
		if !ok || e.name == hfToken {
			continue
		}
		pos, neg := fs.Lookup(e.flag), fs.Lookup(e.neg)
		refuse := func() error {
			flag := e.flag
			if name != e.name {
				flag = e.neg
			}
			return usageErrorf("kvtrim serve does not support llama-server's %s (--%s): unset it", name, flag)
		}
		switch {
		case pos == nil && neg == nil:
			return refuse()
		case pos != nil && pos.Changed || neg != nil && neg.Changed:
			continue // the command line wins (or a variable read before)
		}
		switch {
		case e.neg != "":
			b, err := llamaBool(value)
			if err != nil {
				return usageErrorf("%s=%q: %v", name, value, err)
			}
			switch {
			case b && pos == nil:
				return refuse()
			case b:
				err = fs.Set(e.flag, "true")
			case neg != nil:
				err = fs.Set(e.neg, "true")
			default:
				err = fs.Set(e.flag, "false")
			}
			if err != nil {
				return usageErrorf("%s=%q: %v", name, value, err)
			}
		case e.void:
			if isTruthy(value) {
				if err := fs.Set(e.flag, "true"); err != nil {
					return usageErrorf("%s=%q: %v", name, value, err)
				}
			}
		default:
			if err := fs.Set(e.flag, value); err != nil {
				return usageErrorf("%s=%q: %v", name, value, err)
			}
		}
	}
	return nil
}

// isTruthy and isFalsey are llama.cpp's spellings of a boolean (exact,
// case-sensitive: common/arg.cpp, common_arg_utils::is_truthy).
func isTruthy(v string) bool { return v == "on" || v == "enabled" || v == "true" || v == "1" }
func isFalsey(v string) bool { return v == "off" || v == "disabled" || v == "false" || v == "0" }

// llamaBool parses a boolean variable as llama.cpp does.
func llamaBool(v string) (bool, error) {
	switch {
	case isTruthy(v):
		return true, nil
	case isFalsey(v):
		return false, nil
	}
	return false, errors.New("invalid boolean value: use on, enabled, true or 1; off, disabled, false or 0")
}

// parseServe parses serve's command line, then the environment, and
// checks everything that can be checked before loading anything.
func parseServe(args []string, lookup func(string) (string, bool), stderr io.Writer) (*serveFlags, *common, server.Config, error) {
	fs, f, c := serveFlagSet()
	if err := parseFlags(fs, args, stderr); err != nil {
		return nil, nil, server.Config{}, err
	}
	if fs.NArg() > 0 {
		return nil, nil, server.Config{}, usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	if err := fromEnv(fs, lookup); err != nil {
		return nil, nil, server.Config{}, err
	}
	if err := f.accepted.unsafeFlag(); err != nil {
		return nil, nil, server.Config{}, err
	}
	if f.action() != nil {
		return f, c, server.Config{}, nil // answered without a model
	}
	cfg, err := f.config()
	cfg.Verbose = c.verbose > 0 // -v: llama-server's __verbose in answers too
	return f, c, cfg, err
}

// serveFlagSet is serve's flag set and the flags it fills.
func serveFlagSet() (*pflag.FlagSet, *serveFlags, *common) {
	fs := newFlagSet("serve", "serve -m MODEL [--host 127.0.0.1] [--port 8080] [-np N] [--kv-policy P] [flags]")
	var f serveFlags
	var c common
	f.register(fs)
	c.register(fs)
	f.accepted = registerLlamaFlags(fs)
	return fs, &f, &c
}

// goProcs is how many cores Go's own work (HTTP, JSON, sampling) runs on
// beside llama.cpp's threads (0: one per CPU): the cores they leave, at
// least one, and whether to set it (not when GOMAXPROCS is in the
// environment, nor when it would change nothing). On a 2-core machine
// running llama.cpp on both, Go work on both cores stalls its threads at
// their barriers (docs/SERVE.md measures it).
func goProcs(threads, cpus int, env func(string) (string, bool)) (int, bool) {
	if _, set := env("GOMAXPROCS"); set {
		return 0, false
	}
	if threads <= 0 || threads > cpus {
		threads = cpus
	}
	procs := max(1, cpus-threads)
	return procs, procs < cpus
}

// templateVars are the variables every Jinja rendering gets:
// --chat-template-kwargs, and enable_thinking from --reasoning.
func (f *serveFlags) templateVars() (map[string]any, error) {
	vars := map[string]any{}
	if f.templateKwargs != "" {
		if err := json.Unmarshal([]byte(f.templateKwargs), &vars); err != nil {
			return nil, usageErrorf("--chat-template-kwargs: give a JSON object: %v", err)
		}
	}
	if f.noPreserve || !f.preserve {
		vars["preserve_reasoning"] = false
	}
	if f.reasoningEffort != "" && f.reasoningEffort != "default" {
		vars["reasoning_effort"] = f.reasoningEffort
	}
	switch strings.ToLower(f.reasoning) {
	case "on", "enabled", "true", "1":
		vars["enable_thinking"] = true
	case "off", "disabled", "false", "0":
		vars["enable_thinking"] = false
	case "auto", "":
	default:
		return nil, usageErrorf("--reasoning %q: give on, off or auto", f.reasoning)
	}
	return vars, nil
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
	case f.sleepIdle == 0 || f.sleepIdle < -1:
		return server.Config{}, usageErrorf("--sleep-idle-seconds %d: give a number of seconds, or -1 for never", f.sleepIdle)
	}
	if err := g.validate(); err != nil {
		return server.Config{}, err
	}
	keys, err := f.apiKeys()
	if err != nil {
		return server.Config{}, err
	}
	order, err := f.samplers.order()
	if err != nil {
		return server.Config{}, err
	}
	if f.chatTemplateFile != "" {
		b, err := os.ReadFile(f.chatTemplateFile)
		if err != nil {
			return server.Config{}, usageErrorf("--chat-template-file: %v", err)
		}
		f.chatTemplate = string(b)
	}
	kwargs, err := f.templateVars()
	if err != nil {
		return server.Config{}, err
	}
	if !server.ReasoningFormatKnown(f.reasoningFormat) {
		return server.Config{}, usageErrorf("--reasoning-format %q: give auto, deepseek, deepseek-legacy or none", f.reasoningFormat)
	}
	if f.jsonSchemaFile != "" {
		b, err := os.ReadFile(f.jsonSchemaFile)
		if err != nil {
			return server.Config{}, usageErrorf("--json-schema-file: %v", err)
		}
		f.jsonSchema = string(b)
	}
	if f.jsonSchema != "" {
		g, err := jsongrammar.FromSchema([]byte(f.jsonSchema))
		if err != nil {
			return server.Config{}, usageErrorf("--json-schema: %v", err)
		}
		f.grammar = g
	}
	if f.grammarFile != "" {
		b, err := os.ReadFile(f.grammarFile)
		if err != nil {
			return server.Config{}, usageErrorf("--grammar-file: %v", err)
		}
		f.grammar = string(b)
	}
	seed := uint32(server.RandomSeed)
	if f.seed >= 0 {
		seed = uint32(f.seed)
	}
	threads := g.threads
	if threads < 0 {
		threads = 0
	}
	f.cors.NoCredentials = !f.corsCredentials || f.noCorsCredentials
	cfg := server.Config{
		QueueSize: f.queue, PromptReuse: server.PromptReuse{Similarity: f.similarity, CacheMiB: f.cacheRAM}, WriteTimeout: time.Duration(f.timeout) * time.Second,
		Parallel: f.parallel, CtxSize: g.nCtx, Batch: g.nBatch, UBatch: g.nUbat, Threads: threads,
		FlashAttn: g.flashAttn, Alias: f.alias, Tags: f.tags, APIKeys: keys, Metrics: f.metrics, Slots: f.slots && !f.noSlots, Props: f.props,
		ContextShift: f.contextShift && !f.noContextShift, SleepIdle: time.Duration(max(0, f.sleepIdle)) * time.Second,
		CORSProxy:    f.mcpProxy && !f.noMCPProxy,
		ChatTemplate: f.chatTemplate, Jinja: f.jinja && !f.noJinja, JinjaStrict: f.accepted.fs.Changed("jinja"),
		TemplateKwargs: kwargs, NoPrefillAssistant: !f.prefill || f.noPrefill, ReasoningFormat: f.reasoningFormat, Compression: g.comp, CORS: f.cors, SlotSavePath: f.slotSavePath,
		Sampling: server.Sampling{Keep: f.keep, Grammar: f.grammar,
			TopNSigma: f.samplers.topNSigma, TypicalP: f.samplers.typicalP, XTCProbability: f.samplers.xtcProbability, XTCThreshold: f.samplers.xtcThreshold,
			DynatempRange: f.samplers.dynatempRange, DynatempExponent: f.samplers.dynatempExp, DRYMultiplier: f.samplers.dryMultiplier, DRYBase: f.samplers.dryBase,
			DRYAllowedLength: f.samplers.dryAllowedLength, DRYPenaltyLastN: f.samplers.dryPenaltyLastN, DRYBreakers: f.samplers.breakers(),
			Mirostat: f.samplers.mirostat, MirostatTau: f.samplers.mirostatEnt, MirostatEta: f.samplers.mirostatLR, Order: order, NPredict: g.nPredict, Temp: g.temp, TopK: g.topK, TopP: g.topP, MinP: g.minP, Seed: seed,
			RepeatLastN: f.repeatLastN, RepeatPenalty: f.repeatPenalty, PresencePenalty: f.presencePenalty, FrequencyPenalty: f.frequencyPenalty},
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

// apiKeys are --api-key's comma-separated keys and --api-key-file's lines
// (comments and empty lines aside).
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
		// One key a line, read as llama-server reads the file (common/arg.cpp,
		// --api-key-file): a line is a key as it stands, untrimmed, unless it
		// is empty or starts with "#", a comment.
		n := len(keys)
		for _, line := range strings.Split(string(b), "\n") {
			if line != "" && line[0] != '#' {
				keys = append(keys, line)
			}
		}
		if len(keys) == n {
			return nil, usageErrorf("--api-key-file %s holds no key", f.apiKeyFile)
		}
	}
	return keys, nil
}

// cmdServe runs the HTTP server until SIGINT or SIGTERM, then stops taking
// requests, lets the running ones finish within --timeout (or until a
// second SIGINT or SIGTERM, which cancels them), and exits.
func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, c, cfg, err := parseServe(args, os.LookupEnv, stderr)
	if err != nil {
		return err
	}
	if l := f.action(); l != nil {
		return serveAction(ctx, *l, c, stdout, stderr)
	}
	worker := os.Getenv(workerEnv)
	if f.g.rpc != "" && worker == "" {
		log, err := c.logger(stderr)
		defer c.close()
		if err != nil {
			return err
		}
		port := f.port
		if _, p := server.GCPFromEnv(os.LookupEnv); p > 0 {
			port = p
		}
		return supervise(ctx, args, f, port, time.Duration(f.timeout)*time.Second, log)
	}
	log, lib, err := c.open(ctx, nil, stderr, false)
	defer c.close()
	if err == nil && f.g.rpc != "" {
		err = lib.AddRPCServers(bindings.ParseRPCEndpoints(f.g.rpc))
	}
	if err != nil {
		return err
	}
	for _, l := range f.accepted.given() {
		if l.effect == inert {
			log.Info().Str("flag", l.flagName()).Msg("accepted, changes nothing: " + l.why)
		} else {
			log.Warn().Str("flag", l.flagName()).Msg("not applied: " + l.why)
		}
	}
	if procs, ok := goProcs(cfg.Threads, runtime.NumCPU(), os.LookupEnv); ok {
		runtime.GOMAXPROCS(procs)
		log.Info().Int("gomaxprocs", procs).Int("threads", cfg.Threads).Msg("Go's own work keeps to the cores llama.cpp's threads leave (set GOMAXPROCS to choose)")
	}
	// Vertex AI's prediction protocol, as llama-server reads it from the
	// environment: AIP_HTTP_PORT wins over --port.
	gcp, gcpPort := server.GCPFromEnv(os.LookupEnv)
	cfg.GCP = gcp
	port := f.port
	if gcpPort > 0 {
		port = gcpPort
	}
	srv, err := server.New(cfg, log)
	if err != nil {
		return usageError{err}
	}
	addrKey := "addr"
	var lns []net.Listener
	if worker != "" {
		// The model's process of a supervised server (serve --rpc).
		addrKey = "socket"
		os.Remove(worker) // a dead predecessor's
		ln, lerr := net.Listen("unix", worker)
		lns, err = []net.Listener{ln}, lerr
	} else {
		lns, err = listen(f.host, port)
	}
	if err != nil {
		return err
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
	served := make(chan error, len(lns))
	addrs := make([]string, len(lns))
	for i, ln := range lns {
		go func() { served <- hs.Serve(ln) }()
		addrs[i] = ln.Addr().String()
	}
	log.Info().Str(addrKey, strings.Join(addrs, ",")).Msg("listening; loading the model")

	// The server owns the model: with --sleep-idle-seconds it frees it when
	// idle and loads it again.
	err = srv.Run(func() (*kvtrim.Model, error) {
		return kvtrim.LoadModel(lib, f.g.model, f.g.modelOptions(), log)
	})
	if err != nil {
		hs.Close()
		return err
	}
	defer srv.Close()
	log.Info().Str("url", "http://"+addrs[0]).Str("model", f.g.model).Msg("server is ready")
	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	return shutdown(forced(ctx), hs, srv, cancelRequests, timeout, log)
}

// listen opens a TCP listener on port for each of host's comma-separated
// addresses, as llama-server's --host takes them; the port of the first
// (chosen by the system when port is 0) is used for the others.
func listen(host string, port int) ([]net.Listener, error) {
	var lns []net.Listener
	for _, h := range strings.Split(host, ",") {
		h = strings.Trim(strings.TrimSpace(h), "[]")
		ln, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("listen on %s: %w", h, err)
		}
		if port == 0 {
			port = ln.Addr().(*net.TCPAddr).Port
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// shutdown stops taking requests and waits for the running ones up to
// timeout, or until force is done (a second interrupt), then cancels what
// is left and stops the slots. A forced stop is an error (an interrupt).
func shutdown(force context.Context, hs *http.Server, srv *server.Server, cancelRequests func(), timeout time.Duration, log zerolog.Logger) error {
	log.Info().Dur("timeout", timeout).Msg("shutting down: finishing the running requests (interrupt again to cancel them)")
	sctx, cancel := context.WithTimeout(force, timeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	cancelRequests()
	switch {
	case errors.Is(err, context.Canceled):
		log.Warn().Msg("forced: the running requests were cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		log.Warn().Msg("requests still running after the timeout were cancelled")
	}
	if err != nil {
		hs.Close()
	}
	srv.Close()
	log.Info().Msg("stopped")
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("forced to stop: %w", err)
	}
	return nil
}
