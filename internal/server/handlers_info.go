package server

import (
	"net/http"
	"strconv"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// handleHealth answers 200 once the model is loaded, 503 before.
func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	if s.eng.Load() == nil {
		writeError(w, unavailable("Loading model"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// slotInfo is one slot in /slots and /props.
type slotInfo struct {
	ID           int       `json:"id"`
	NCtx         int       `json:"n_ctx"`
	Speculative  bool      `json:"speculative"`
	IsProcessing bool      `json:"is_processing"`
	Params       *settings `json:"params,omitempty"`
	Kvtrim       *KVStats  `json:"kvtrim,omitempty"`
}

// defaultSettings are the settings of a request that overrides nothing.
func (s *Server) defaultSettings(e *engine) *settings {
	return settingsOf(&Request{Sampling: s.cfg.Sampling, Compression: *s.compression.Load()}, e.slotCtx)
}

// slotInfo is a slot as /slots shows it: its last request's settings as
// params, none before its first request (as llama-server's).
func (s *Server) slotInfo(e *engine, sl *slot) slotInfo {
	info := slotInfo{ID: sl.id, NCtx: sl.nCtx, IsProcessing: sl.busy.Load()}
	if req := sl.lastReq.Load(); req != nil {
		info.Params = settingsOf(req, sl.nCtx)
	}
	if st := sl.last.Load(); st != nil {
		info.Kvtrim = kvStatsOf(*st)
	}
	return info
}

// defaultGenerationSettings is /props' view of a slot: the first one,
// with the server's default settings as params.
func (s *Server) defaultGenerationSettings(e *engine) slotInfo {
	info := s.slotInfo(e, e.pool.slots[0])
	info.Params = s.defaultSettings(e)
	return info
}

// handleProps answers GET /props: the defaults, the slots and the model.
func (s *Server) handleProps(w http.ResponseWriter, _ *http.Request) {
	e := s.eng.Load()
	if e == nil {
		writeError(w, unavailable("Loading model"))
		return
	}
	writeJSON(w, http.StatusOK, s.props(e, false))
}

// props is GET /props' answer.
func (s *Server) props(e *engine, sleeping bool) map[string]any {
	vocab := e.model.Vocab()
	lib := e.model.Library()
	return map[string]any{
		"default_generation_settings": s.defaultGenerationSettings(e),
		"total_slots":                 len(e.pool.slots),
		"model_alias":                 e.name,
		"model_path":                  e.model.Path,
		"chat_template":               e.template,
		"bos_token":                   vocab.Piece(vocab.BOS(), true),
		"eos_token":                   vocab.Piece(vocab.EOS(), true),
		"build_info":                  "kvtrim " + kvtrim.Version + " (libllama " + lib.Version + ")",
		"modalities":                  map[string]bool{"vision": false, "audio": false},
		"is_sleeping":                 sleeping, // --sleep-idle-seconds
		"kvtrim": map[string]any{
			"version":     kvtrim.Version,
			"compression": compressionJSON(*s.compression.Load()),
			"lib":         lib.LlamaPath,
		},
	}
}

// handleSetProps answers POST /props: with --props, a "kvtrim" object
// changes the default compression of the requests that come after (as a
// request's own "kvtrim" object would change its own); other fields are
// ignored, as llama-server ignores them.
func (s *Server) handleSetProps(w http.ResponseWriter, r *http.Request, e *engine) {
	if !s.cfg.Props {
		writeError(w, notSupported("This server does not support changing global properties. Start it with `--props`"))
		return
	}
	body, err := readBody(r)
	var props struct {
		Kvtrim *kvtrim.CompressionPatch `json:"kvtrim"`
	}
	if err == nil {
		err = decodeBody(body, &props)
	}
	if err == nil && props.Kvtrim != nil {
		var c kvtrim.Compression
		if c, err = s.compression.Load().Patch(*props.Kvtrim); err != nil {
			err = badRequest(`"kvtrim": %v`, err)
		} else if err = fitsShifting(c, e.slotCtx); err == nil {
			s.compression.Store(&c)
			s.log.Info().Str("kv_policy", c.Policy).Msg("default compression changed (POST /props)")
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"success": true})
}

// handleModels answers GET /v1/models: the one model, OpenAI's shape.
func (s *Server) handleModels(w http.ResponseWriter, _ *http.Request, e *engine) {
	writeJSON(w, http.StatusOK, modelsList(e))
}

// modelsList is GET /v1/models' answer.
func modelsList(e *engine) map[string]any {
	m := e.model
	model := map[string]any{
		"id": e.name, "aliases": e.aliases, "tags": e.tags, "object": "model", "created": e.created, "owned_by": "llamacpp",
		"meta": map[string]any{
			"n_vocab": m.Vocab().NTokens(), "n_ctx_train": m.NCtxTrain(), "n_embd": m.NEmbd(),
			"n_params": m.NParams(), "size": m.Size(),
		},
	}
	return map[string]any{"object": "list", "data": []any{model}}
}

// handleSlots answers GET /slots, unless disabled (--no-slots).
func (s *Server) handleSlots(w http.ResponseWriter, _ *http.Request, e *engine) {
	if !s.cfg.Slots {
		writeError(w, notSupported("This server does not support slots endpoint. Start it with `--slots`"))
		return
	}
	out := make([]slotInfo, len(e.pool.slots))
	for i, sl := range e.pool.slots {
		out[i] = s.slotInfo(e, sl)
	}
	writeJSON(w, http.StatusOK, out)
}

// handleMetrics answers GET /metrics in Prometheus' format, with --metrics.
func (s *Server) handleMetrics(w http.ResponseWriter, _ *http.Request, e *engine) {
	if !s.cfg.Metrics {
		writeError(w, notSupported("This server does not support metrics endpoint. Start it with `--metrics`"))
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	w.Header().Set("Process-Start-Time-Unix", strconv.FormatInt(e.created, 10)) // llama-server's: when the slots started
	if err := s.metrics.write(w, int(e.pool.busy.Load()), e.pool.deferred(), e.pool.decodeStats()); err != nil {
		s.log.Debug().Err(err).Msg("write metrics")
	}
}

// handleTokenize answers POST /tokenize: {"content", "add_special"} to
// {"tokens"}.
func (s *Server) handleTokenize(w http.ResponseWriter, r *http.Request, e *engine) {
	var b struct {
		Content      *string `json:"content"`
		AddSpecial   bool    `json:"add_special"`
		ParseSpecial *bool   `json:"parse_special"`
		WithPieces   bool    `json:"with_pieces"`
	}
	if err := s.decode(r, &b); err != nil {
		writeError(w, err)
		return
	}
	if b.Content == nil {
		writeError(w, badRequest(`"content" is missing: give the text to tokenize`))
		return
	}
	parse := b.ParseSpecial == nil || *b.ParseSpecial
	vocab := e.model.Vocab()
	tokens, err := vocab.Tokenize(*b.Content, b.AddSpecial, parse)
	if err != nil {
		writeError(w, badRequest("%v", err))
		return
	}
	if tokens == nil {
		tokens = []bindings.Token{}
	}
	if !b.WithPieces {
		writeJSON(w, http.StatusOK, map[string]any{"tokens": tokens})
		return
	}
	type piece struct {
		ID    bindings.Token `json:"id"`
		Piece string         `json:"piece"`
	}
	pieces := make([]piece, len(tokens))
	for i, t := range tokens {
		pieces[i] = piece{t, vocab.Piece(t, true)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": pieces})
}

// handleDetokenize answers POST /detokenize: {"tokens"} to {"content"}.
func (s *Server) handleDetokenize(w http.ResponseWriter, r *http.Request, e *engine) {
	var b struct {
		Tokens []int `json:"tokens"`
	}
	if err := s.decode(r, &b); err != nil {
		writeError(w, err)
		return
	}
	tokens, err := checkTokens(b.Tokens, e.model.Vocab().NTokens())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"content": e.model.Vocab().Detokenize(tokens, false, true)})
}

// handleApplyTemplate answers POST /apply-template: {"messages"} to the
// prompt the chat template makes of them.
func (s *Server) handleApplyTemplate(w http.ResponseWriter, r *http.Request, e *engine) {
	var b chatBody
	if err := s.decode(r, &b); err != nil {
		writeError(w, err)
		return
	}
	chat, err := b.chat()
	if err != nil {
		writeError(w, err)
		return
	}
	prompt, err := e.render(chat)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"prompt": prompt})
}

// decode reads and unmarshals a request body.
func (s *Server) decode(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	return decodeBody(body, v)
}

// compressionJSON is c as a request's "kvtrim" object names it.
func compressionJSON(c kvtrim.Compression) kvtrim.Compression {
	c.Policy = c.PolicyName()
	return c
}
