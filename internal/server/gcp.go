package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"
)

// GCP is Google Cloud Vertex AI's prediction protocol, as llama-server
// serves it when AIP_MODE=PREDICTION: POST PredictRoute takes
// {"instances": [...]}, each an endpoint's request body with an
// "@requestFormat" naming the endpoint (its path, or the path in
// camelCase: "chatCompletions"), and answers {"predictions": [...]}, one
// answer (or error) each, in order.
type GCP struct {
	Enabled bool
	// PredictRoute is where predictions are asked ("": /predict);
	// HealthRoute, when set, answers as /health does.
	PredictRoute, HealthRoute string
}

// GCPFromEnv reads the AIP_* variables as llama-server does, and the port
// AIP_HTTP_PORT sets (0: none).
func GCPFromEnv(lookup func(string) (string, bool)) (GCP, int) {
	get := func(name string) string {
		v, _ := lookup(name)
		if v != "" && v[0] != '/' && name != "AIP_MODE" && name != "AIP_HTTP_PORT" {
			v = "/" + v
		}
		return v
	}
	g := GCP{Enabled: get("AIP_MODE") == "PREDICTION", PredictRoute: get("AIP_PREDICT_ROUTE"), HealthRoute: get("AIP_HEALTH_ROUTE")}
	port := 0
	if g.Enabled {
		port = 8080
		if p, err := strconv.Atoi(get("AIP_HTTP_PORT")); err == nil && p > 0 && p < 65536 {
			port = p
		}
	}
	return g, port
}

// maxInstances bounds one prediction request, as llama-server's.
const maxInstances = 128

// gcpFormat is a path's camelCase name: "/v1/chat/completions" is
// "chatCompletions", "/apply-template" "applyTemplate".
func gcpFormat(path string) string {
	path = strings.TrimPrefix(strings.TrimPrefix(path, "/v1"), "/")
	var b strings.Builder
	up := false
	for _, r := range path {
		if r == '/' || r == '-' || r == '_' {
			up = true
			continue
		}
		if up {
			r = unicode.ToUpper(r)
		}
		b.WriteRune(r)
		up = false
	}
	return b.String()
}

// handlePredict answers the prediction route, each instance through mux.
func handlePredict(mux http.Handler, routes []string) http.HandlerFunc {
	byFormat := map[string]string{}
	for _, p := range routes { // the first route of a name wins
		if f := gcpFormat(p); byFormat[f] == "" {
			byFormat[f] = p
		}
	}
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(r)
		if err != nil {
			writeError(w, err)
			return
		}
		var req struct {
			Instances *[]json.RawMessage `json:"instances"`
		}
		if err := decodeBody(body, &req); err != nil {
			writeError(w, err)
			return
		}
		switch {
		case req.Instances == nil:
			writeError(w, badRequest("request body must include an array field named instances"))
			return
		case len(*req.Instances) > maxInstances:
			writeError(w, badRequest("instances array exceeds maximum size of %d", maxInstances))
			return
		}
		predictions := make([]any, len(*req.Instances))
		var wg sync.WaitGroup
		for i, inst := range *req.Instances {
			wg.Add(1)
			go func() {
				defer wg.Done()
				predictions[i] = predictOne(r, mux, routes, byFormat, inst)
			}()
		}
		wg.Wait()
		writeJSON(w, http.StatusOK, map[string]any{"predictions": predictions})
	}
}

// predictOne answers one instance: its endpoint's answer, or an error.
func predictOne(outer *http.Request, mux http.Handler, routes []string, byFormat map[string]string, inst json.RawMessage) any {
	var payload map[string]json.RawMessage
	if err := json.Unmarshal(inst, &payload); err != nil || payload == nil {
		return badRequest("each instance must be a JSON object").body()
	}
	var format string
	if err := json.Unmarshal(payload["@requestFormat"], &format); err != nil {
		return badRequest("each instance must include a string @requestFormat").body()
	}
	delete(payload, "@requestFormat")
	if _, ok := payload["stream"]; ok {
		payload["stream"] = json.RawMessage("false") // the predict route does not stream
	}
	path := byFormat[format]
	if path == "" && slices.Contains(routes, format) {
		path = format
	}
	if path == "" {
		return badRequest("no handler registered for @requestFormat: %s", format).body()
	}
	b, _ := json.Marshal(payload)
	in := httptest.NewRequestWithContext(outer.Context(), http.MethodPost, path, bytes.NewReader(b))
	in.Header = outer.Header.Clone()
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, in)
	var out any
	if rec.Body.Len() == 0 {
		return nil
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		return rec.Body.String()
	}
	return out
}
