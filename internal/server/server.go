package server

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/hooks"
	"github.com/kvtrim/kvtrim/internal/chattemplate"
	"github.com/kvtrim/kvtrim/internal/reasoning"
	"github.com/kvtrim/kvtrim/internal/toolcall"
)

// Server is kvtrim's llama-server-compatible HTTP server. Its handler
// answers 503 until Start has made the slots, so the listener can open
// before the model is loaded.
type Server struct {
	cfg     Config
	log     zerolog.Logger
	metrics *metrics
	eng     atomic.Pointer[engine]
	// compression is the default compression of requests: the
	// configuration's, until POST /props changes it.
	compression atomic.Pointer[kvtrim.Compression]
	// load and owned are Run's: how to load the model, and the model the
	// server loaded and frees (nil while asleep, or when Start was given
	// the caller's).
	load  func() (*kvtrim.Model, error)
	owned *kvtrim.Model
	sleep sleeper
}

// engine is what serving needs once the model is loaded.
type engine struct {
	model     *kvtrim.Model
	pool      *pool
	name      string // the model's name in responses
	template  string // the chat template in use
	slotCtx   int    // cells of each slot's context
	evictable error  // why this model cannot be compressed, or nil
	created   int64  // when the model was loaded, Unix seconds
	// fingerprint is the OpenAI responses' system_fingerprint:
	// llama-server's form, "b" then the build (here the loaded libllama's
	// version, or its build for a release without one, since libllama
	// carries no build number or commit), then kvtrim's version.
	fingerprint string
	// verboseAll is Config.Verbose.
	verboseAll bool
	// grammarOK is the server's default grammar, checked at the start.
	grammarOK string
	// jinja, when set (--jinja), renders chats in place of template,
	// with templateVars.
	jinja        *chattemplate.Template
	templateVars map[string]any
	// prefill continues a final assistant message (--prefill-assistant).
	prefill bool
	// toolFormat is the tool-call format the Jinja template's model
	// writes, nil when unknown; toolsShown says the template shows the
	// model its tools at all.
	toolFormat *toolcall.Format
	toolsShown bool
	// reasoningTags are the Jinja template's reasoning markers (nil
	// without), and reasoningFormat the server's --reasoning-format.
	reasoningTags   *reasoning.Tags
	reasoningFormat string
	// aliases and tags are -a's and --tags' names, sorted (/v1/models).
	aliases, tags []string
	// eog is the vocabulary's end-of-generation tokens, which ignore_eos
	// bans (logit_bias).
	eog []kvtrim.Token
}

// eogTokens lists the vocabulary's end-of-generation tokens.
func eogTokens(m *kvtrim.Model) []kvtrim.Token {
	v := m.Vocab()
	var out []kvtrim.Token
	for t := range v.NTokens() {
		if v.IsEOG(kvtrim.Token(t)) {
			out = append(out, kvtrim.Token(t))
		}
	}
	return out
}

// nameSet is a comma-separated list's names, trimmed, without empty ones
// or repeats, sorted: llama-server's --alias and --tags.
func nameSet(list string) []string {
	out := []string{}
	for _, n := range strings.Split(list, ",") {
		if n = strings.TrimSpace(n); n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// New checks cfg and returns a server that is still loading.
func New(cfg Config, log zerolog.Logger) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.SlotSavePath != "" {
		if err := os.MkdirAll(cfg.SlotSavePath, 0o755); err != nil {
			return nil, fmt.Errorf("slot save path: %w", err)
		}
	}
	s := &Server{cfg: cfg, log: log, metrics: &metrics{}}
	s.compression.Store(&cfg.Compression)
	return s, nil
}

// Config is the server's configuration, defaults filled in.
func (s *Server) Config() Config { return s.cfg }

// Start makes the slots for model and starts serving requests. The model
// stays the caller's: close it after Close.
func (s *Server) Start(model *kvtrim.Model) error {
	if s.eng.Load() != nil {
		return errors.New("server already started")
	}
	total := s.cfg.CtxSize
	if total == 0 {
		total = model.NCtxTrain()
	}
	slotCtx := total / s.cfg.Parallel
	if slotCtx < 1 {
		return fmt.Errorf("context of %d cells split over %d slots leaves none per slot: raise -c or lower -np", total, s.cfg.Parallel)
	}
	if err := fitsShifting(s.cfg.Compression, slotCtx); err != nil {
		return fmt.Errorf("kv compression: %s", err.Error())
	}
	jinja, src, err := s.jinjaTemplate(model)
	if err != nil && !s.cfg.JinjaStrict {
		s.log.Warn().Err(err).Msg("the chat template does not compile as Jinja here: chats are rendered with llama.cpp's built-in templates (--no-jinja to say so, --jinja to make this an error)")
		jinja, err = nil, nil
	}
	if err != nil {
		return err
	}
	vars := map[string]any{} // enable_thinking: the template's default, unless --reasoning
	for k, v := range s.cfg.TemplateKwargs {
		vars[k] = v
	}
	tmpl := src // what /props shows
	if jinja == nil {
		if tmpl, err = s.chatTemplate(model); err != nil {
			return err
		}
	}
	if g := s.cfg.Sampling.Grammar; g != "" {
		if err := model.Vocab().CheckGrammar(g); err != nil {
			return fmt.Errorf("--grammar: %w (llama.cpp's log above says where)", err)
		}
	}
	threads := s.cfg.Threads
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	opt := kvtrim.SessionOptions{
		NCtx: slotCtx, NBatch: s.cfg.Batch, NUbatch: s.cfg.UBatch, Threads: threads,
		FlashAttn: s.cfg.FlashAttn, Compression: s.cfg.Compression,
	}
	p, err := newPool(model, s.cfg.Parallel, s.cfg.QueueSize, s.cfg.PromptReuse, s.cfg.ContextShift, opt, s.metrics, s.log)
	if err != nil {
		return err
	}
	if s.cfg.ContextShift && !p.slots[0].sess.Context().Memory().CanShift() {
		s.log.Warn().Msg("--context-shift: this model's cache cannot shift positions; generations stop when a slot is full (llama-server turns it off too)")
		for _, sl := range p.slots {
			sl.shift = false
		}
	}
	aliases, tags := nameSet(s.cfg.Alias), nameSet(s.cfg.Tags)
	name := model.Path
	if len(aliases) > 0 {
		name = aliases[0] // as llama-server: the first alias, in sorted order
	}
	e := &engine{
		model: model, pool: p, name: name, template: tmpl, slotCtx: p.slots[0].nCtx,
		evictable: hooks.CheckEvictable(model.Model), created: time.Now().Unix(),
		fingerprint: "b" + strings.TrimPrefix(model.Library().Version, "b") + "-kvtrim" + kvtrim.Version,
		verboseAll:  s.cfg.Verbose, grammarOK: s.cfg.Sampling.Grammar, jinja: jinja, templateVars: vars, prefill: !s.cfg.NoPrefillAssistant, toolFormat: toolFormatOf(jinja, src), toolsShown: jinja != nil && jinja.ShowsTools(), reasoningTags: jinja.Reasoning(), reasoningFormat: s.cfg.ReasoningFormat,
		aliases: aliases, tags: tags, eog: eogTokens(model),
	}
	s.eng.Store(e)
	s.log.Info().Int("slots", s.cfg.Parallel).Int("n_ctx_slot", e.slotCtx).Int("threads", opt.Threads).
		Str("kv_policy", opt.Compression.PolicyName()).Msg("slots ready")
	return nil
}

// toolFormatOf is the tool-call format of a Jinja template's model.
func toolFormatOf(t *chattemplate.Template, src string) *toolcall.Format {
	if t == nil {
		return nil
	}
	return toolcall.Detect(src)
}

// chatMLJinja is ChatML as a Jinja template, for models without one.
const chatMLJinja = `{%- for m in messages -%}{{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' -}}{%- endfor -%}` +
	`{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}`

// jinjaTemplate is the Jinja template chats are rendered with under
// --jinja, and its text: the configured template's text (any text, even
// one without Jinja tags), else the model's own; nil without --jinja, for
// a built-in template's name; ChatML for a model without a template.
func (s *Server) jinjaTemplate(model *kvtrim.Model) (*chattemplate.Template, string, error) {
	if !s.cfg.Jinja {
		return nil, "", nil
	}
	src := s.cfg.ChatTemplate
	if src == "" {
		src = model.ChatTemplate()
	}
	if src == "" {
		src = chatMLJinja // as llama-server: ChatML for a model without a template
	}
	if !strings.ContainsAny(src, " \n{%") {
		return nil, "", nil // a built-in template's name (chatml, llama3, ...)
	}
	v := model.Vocab()
	t, err := chattemplate.Compile(src, v.Piece(v.BOS(), true), v.Piece(v.EOS(), true), v.AddBOS())
	if err != nil {
		return nil, "", fmt.Errorf("%w (or run without --jinja, with a built-in template: --chat-template chatml)", err)
	}
	return t, src, nil
}

// chatTemplate is the template chat requests are rendered with: the
// configured one, the model's, or chatml for a model without one (as
// llama-server does). It is tried once here so a bad one fails the start.
func (s *Server) chatTemplate(model *kvtrim.Model) (string, error) {
	tmpl := s.cfg.ChatTemplate
	if tmpl == "" {
		tmpl = model.ChatTemplate()
	}
	if tmpl == "" {
		s.log.Warn().Msg("the model has no chat template: chat requests use chatml")
		tmpl = "chatml"
	}
	if _, err := model.ApplyChatTemplate(tmpl, []bindings.ChatMessage{{Role: "user", Content: "hi"}}, true); err != nil {
		return "", fmt.Errorf("chat template: %w (give one llama.cpp knows with --chat-template, e.g. chatml)", err)
	}
	return tmpl, nil
}

// Close stops the slots, after their running requests (cancel those
// first, through the requests' contexts, to stop them sooner), and frees
// their contexts. The server answers 503 afterwards.
func (s *Server) Close() {
	if s.sleep.quit != nil {
		close(s.sleep.quit)
		<-s.sleep.done
		s.sleep.quit = nil
	}
	s.sleep.mu.Lock()
	defer s.sleep.mu.Unlock()
	if e := s.eng.Load(); e != nil {
		e.pool.close()
	}
	if s.owned != nil {
		s.owned.Close()
		s.owned = nil
	}
}
