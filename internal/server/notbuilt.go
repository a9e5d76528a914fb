package server

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/kvtrim/kvtrim"
)

// llama-server's endpoints for features kvtrim serve does not build yet:
// each answers llama-server's 501 (not_supported) with what is missing,
// never a 404 that would read as a wrong URL, nor a made-up answer.

// notBuilt are those endpoints and why; infill is answered apart, since
// llama-server's answer depends on the model.
var notBuilt = []struct {
	paths []string
	why   string
}{
	{[]string{"/embedding", "/embeddings", "/v1/embeddings"},
		"This server does not support embeddings: kvtrim serve has none yet (llama-server serves them with `--embeddings`)"},
	{[]string{"/rerank", "/reranking", "/v1/rerank", "/v1/reranking"},
		"This server does not support reranking: kvtrim serve has none yet (llama-server serves it with `--reranking`)"},
	{[]string{"/audio/transcriptions", "/v1/audio/transcriptions"},
		"The current model does not support audio input: kvtrim serve takes text only"},
}

// routeNotBuilt registers the endpoints of notBuilt and /infill.
func (s *Server) routeNotBuilt(post func(path string, h http.HandlerFunc)) {
	for _, nb := range notBuilt {
		for _, p := range nb.paths {
			post(p, func(w http.ResponseWriter, _ *http.Request) { writeError(w, notSupported(nb.why)) })
		}
	}
	post("/infill", s.ready(s.handleInfill))
	post("/lora-adapters", handleSetLora)
}

// handleLora answers GET /lora-adapters: the adapters loaded, none.
func handleLora(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, []any{}) }

// handleSetLora answers POST /lora-adapters: an array of {id, scale};
// with no adapter loaded, only the empty one is valid.
func handleSetLora(w http.ResponseWriter, r *http.Request) {
	var adapters []json.RawMessage
	body, err := readBody(r)
	if err == nil {
		if json.Unmarshal(body, &adapters) != nil {
			err = badRequest("Request body must be an array")
		} else if len(adapters) > 0 {
			err = badRequest("invalid adapter id: kvtrim serve loads no LoRA adapters")
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"success": true})
}

// handleInfill answers POST /infill as llama-server answers it for a
// model without fill-in-the-middle tokens, which is what it checks first;
// for a model with them, that kvtrim serve has no infill yet.
func (s *Server) handleInfill(w http.ResponseWriter, _ *http.Request, e *engine) {
	writeError(w, notSupported(infillMissing(e.model)))
}

// infillMissing is why /infill cannot answer for model.
func infillMissing(model *kvtrim.Model) string {
	v := model.Vocab()
	var missing []string
	for _, t := range []struct {
		name string
		tok  kvtrim.Token
	}{{"prefix", v.FIMPrefix()}, {"suffix", v.FIMSuffix()}, {"middle", v.FIMMiddle()}} {
		if t.tok < 0 {
			missing = append(missing, t.name+" token is missing.")
		}
	}
	if len(missing) > 0 {
		return "Infill is not supported by this model: " + strings.Join(missing, " ")
	}
	return "Infill is not supported by kvtrim serve yet: use /completion with the model's fill-in-the-middle tokens in the prompt"
}
