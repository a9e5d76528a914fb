package server

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Handler is the server's HTTP handler: every endpoint, behind the API key
// check, the body limit and the request log.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	var posts []string // the POST routes, which GCP's predict route dispatches to
	post := func(path string, h http.HandlerFunc) {
		mux.HandleFunc("POST "+path, h)
		posts = append(posts, path)
	}
	for _, p := range []string{"GET /health", "GET /v1/health"} {
		mux.HandleFunc(p, s.upWhileAsleep(s.handleHealth))
	}
	mux.HandleFunc("GET /props", s.upWhileAsleep(s.handleProps))
	mux.HandleFunc("GET /cors-proxy", s.handleCORSProxy)
	mux.HandleFunc("POST /cors-proxy", s.handleCORSProxy)
	post("/props", s.ready(s.handleSetProps))
	for _, p := range []string{"GET /models", "GET /v1/models"} {
		mux.HandleFunc(p, s.upWhileAsleep(s.ready(s.handleModels)))
	}
	mux.HandleFunc("GET /slots", s.ready(s.handleSlots))
	mux.HandleFunc("POST /slots/{id}", s.ready(s.handleSlotAction))
	mux.HandleFunc("GET /metrics", s.upWhileAsleep(s.ready(s.handleMetrics)))
	// OpenAI's /v1 routes first: GCP's camelCase names mean them.
	post("/v1/completions", s.ready(s.handleOAICompletion))
	for _, p := range []string{"/v1/chat/completions", "/chat/completions"} {
		post(p, s.ready(s.handleChat))
	}
	for _, p := range []string{"/completion", "/completions"} {
		post(p, s.ready(s.handleCompletion))
	}
	for _, p := range []string{"/v1/chat/completions/input_tokens", "/chat/completions/input_tokens"} {
		post(p, s.ready(s.handleChatInputTokens))
	}
	for _, p := range []string{"/v1/responses", "/responses"} {
		post(p, s.ready(s.handleResponses))
		post(p+"/input_tokens", s.ready(s.handleResponsesInputTokens))
	}
	post("/v1/messages", s.ready(s.handleAnthropic))
	post("/v1/messages/count_tokens", s.ready(s.handleAnthropicCountTokens))
	s.routeNotBuilt(post)
	mux.HandleFunc("GET /lora-adapters", handleLora)
	post("/tokenize", s.ready(s.handleTokenize))
	post("/detokenize", s.ready(s.handleDetokenize))
	post("/apply-template", s.ready(s.handleApplyTemplate))
	if g := s.cfg.GCP; g.Enabled {
		route := g.PredictRoute
		if route == "" {
			route = "/predict"
		}
		predict := handlePredict(mux, posts)
		mux.HandleFunc("POST "+route, s.ready(func(w http.ResponseWriter, r *http.Request, _ *engine) { predict(w, r) }))
		if g.HealthRoute != "" {
			mux.HandleFunc("GET "+g.HealthRoute, s.handleHealth)
		}
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &APIError{Code: http.StatusNotFound, Type: typeNotFound, Message: fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path)})
	})
	return s.logRequests(s.cors(s.authorize(s.limitBody(mux))))
}

// ready passes requests to h once the model is loaded, and answers 503
// before.
func (s *Server) ready(h func(http.ResponseWriter, *http.Request, *engine)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		done, err := s.use()
		if err != nil {
			writeError(w, err)
			return
		}
		defer done()
		e := s.eng.Load()
		if e == nil {
			writeError(w, unavailable("Loading model"))
			return
		}
		h(w, r, e)
	}
}

// upWhileAsleep is h, answered from what the server said on falling asleep
// while it sleeps (sleeper).
func (s *Server) upWhileAsleep(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.sleeping(w, r) {
			h(w, r)
		}
	}
}

// isPublic reports whether a request is answered without an API key, as
// llama-server 0.5.0 answers it: /health and /v1/health, "/" (the page of
// llama-server's web UI, which kvtrim does not have: it answers 404), and
// every OPTIONS request (a browser's CORS preflight, which carries no key).
func isPublic(r *http.Request) bool {
	switch r.URL.Path {
	case "/health", "/v1/health", "/":
		return true
	}
	return r.Method == http.MethodOptions
}

// authorize requires one of the API keys, when any, as llama-server does:
// "Authorization: Bearer KEY", "Authorization: KEY", "X-Api-Key: KEY" or
// "X-Api-Key: Bearer KEY", compared in constant time; a request without a
// valid key gets a 401, or while the model loads the 503 every request
// gets then (llama-server answers "Loading model" before it checks keys).
func (s *Server) authorize(next http.Handler) http.Handler {
	if len(s.cfg.APIKeys) == 0 {
		return next
	}
	keys := make([][]byte, len(s.cfg.APIKeys))
	for i, k := range s.cfg.APIKeys {
		keys[i] = []byte(k)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case isPublic(r) || validKey(keys, requestKey(r)):
			next.ServeHTTP(w, r)
		case s.eng.Load() == nil:
			writeError(w, unavailable("Loading model"))
		default:
			writeError(w, &APIError{Code: http.StatusUnauthorized, Type: typeAuthentication, Message: "Invalid API Key"})
		}
	})
}

// requestKey is the key a request carries, read as llama-server reads it:
// the Authorization header or, when that is empty, X-Api-Key, without a
// leading "Bearer " (so spelled: the prefix is case-sensitive, and what
// follows it is the key, spaces included).
func requestKey(r *http.Request) string {
	key := r.Header.Get("Authorization")
	if key == "" {
		key = r.Header.Get("X-Api-Key")
	}
	return strings.TrimPrefix(key, "Bearer ")
}

// validKey compares got with every key in constant time.
func validKey(keys [][]byte, got string) bool {
	ok := 0
	g := []byte(got)
	for _, k := range keys {
		ok |= subtle.ConstantTimeCompare(k, g)
	}
	return got != "" && ok == 1
}

// limitBody bounds request bodies; readBody turns the overflow into a 413.
func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		next.ServeHTTP(w, r)
	})
}

// readBody reads a request's body, within the limit.
func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, &APIError{Code: http.StatusRequestEntityTooLarge, Type: typeInvalidRequest,
			Message: fmt.Sprintf("request body is larger than the server's limit of %d bytes", tooBig.Limit)}
	case err != nil:
		return nil, badRequest("read the request body: %v", err)
	}
	return b, nil
}

// statusWriter remembers the status code for the request log.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush passes streaming flushes through.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap is for http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests logs one line per request: at info level, or debug for the
// polling endpoints.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		ev := s.log.Info()
		switch r.URL.Path {
		case "/health", "/v1/health", "/metrics", "/slots", "/props":
			ev = s.log.Debug()
		}
		ev.Str("method", r.Method).Str("path", r.URL.Path).Int("status", sw.code).
			Dur("took", time.Since(start)).Str("remote", r.RemoteAddr).Msg("request")
	})
}
