package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kvtrim/kvtrim/internal/testenv"
)

// authServer is a server with keys k1 and k2 whose authorize() guards a
// handler answering 204; ready makes it look started (authorize only asks
// whether a model is loaded), so no model is needed.
func authServer(t *testing.T, ready bool) http.Handler {
	t.Helper()
	cfg := testConfig()
	cfg.APIKeys = []string{"k1", "k2"}
	s, err := New(cfg, testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	if ready {
		s.eng.Store(&engine{})
	}
	return s.authorize(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
}

// authRequest sends method path with headers (name, value pairs) to h.
func authRequest(h http.Handler, method, path string, headers ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestAuthHeaderForms: the key is read as llama-server 0.5.0 reads it
// (tools/server/server-http.cpp, middleware_validate_api_key): the
// Authorization header, else X-Api-Key, less a case-sensitive "Bearer "
// prefix. (Both servers trim the spaces around a header's value as they
// read it, so only the spaces inside are tested.)
func TestAuthHeaderForms(t *testing.T) {
	h := authServer(t, true)
	for _, c := range []struct {
		headers []string
		ok      bool
	}{
		{[]string{"Authorization", "Bearer k1"}, true},
		{[]string{"Authorization", "Bearer k2"}, true},
		{[]string{"Authorization", "k1"}, true}, // a bare key
		{[]string{"X-Api-Key", "k2"}, true},
		{[]string{"X-Api-Key", "Bearer k2"}, true},                                      // the prefix goes from either header
		{[]string{"Authorization", "", "X-Api-Key", "k1"}, true},                        // an empty Authorization is no key
		{[]string{"Authorization", "Bearer k1", "Authorization", "Bearer wrong"}, true}, // the first header counts
		{nil, false},
		{[]string{"Authorization", "bearer k1"}, false}, // the prefix is case-sensitive
		{[]string{"Authorization", "BEARER k1"}, false},
		{[]string{"Authorization", "Bearer  k1"}, false}, // what follows "Bearer " is the key, spaces included
		{[]string{"Authorization", "Bearer"}, false},
		{[]string{"Authorization", "Bearer "}, false},
		{[]string{"Authorization", "Basic k1"}, false},
		{[]string{"Authorization", "Bearer k3"}, false},
		{[]string{"Authorization", "Bearer k"}, false},
		{[]string{"Authorization", "Bearer k1k2"}, false},
		{[]string{"Authorization", "Bearer wrong", "X-Api-Key", "k1"}, false}, // Authorization wins
		{[]string{"X-Api-Key", "bearer k2"}, false},
	} {
		w := authRequest(h, "POST", "/v1/chat/completions", c.headers...)
		if c.ok && w.Code != http.StatusNoContent {
			t.Errorf("%q: status %d, want the request passed on", c.headers, w.Code)
		}
		if !c.ok {
			wantInvalidKey(t, w, c.headers)
		}
	}
}

// wantInvalidKey checks llama-server's answer to a missing or wrong key.
func wantInvalidKey(t *testing.T, w *httptest.ResponseRecorder, what any) {
	t.Helper()
	var body struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Errorf("%v: body %q: %v", what, w.Body.String(), err)
	}
	want := map[string]any{"code": float64(401), "message": "Invalid API Key", "type": "authentication_error"}
	if w.Code != http.StatusUnauthorized || len(body.Error) != len(want) ||
		w.Header().Get("Content-Type") != "application/json; charset=utf-8" {
		t.Errorf("%v: %d %q %s, want 401 %v", what, w.Code, w.Header().Get("Content-Type"), w.Body.String(), want)
		return
	}
	for k, v := range want {
		if body.Error[k] != v {
			t.Errorf("%v: error.%s = %v, want %v", what, k, body.Error[k], v)
		}
	}
}

// TestAuthPublicEndpoints: llama-server leaves /health, /v1/health, "/"
// (its web UI's page) and OPTIONS requests (CORS preflights) open; every
// other path needs a key, whatever the method.
func TestAuthPublicEndpoints(t *testing.T) {
	h := authServer(t, true)
	for _, r := range [][2]string{
		{"GET", "/health"}, {"GET", "/v1/health"}, {"GET", "/"},
		// llama-server looks at the path only; the router answers the method.
		{"HEAD", "/health"}, {"POST", "/health"},
		{"OPTIONS", "/v1/chat/completions"}, {"OPTIONS", "/completion"},
	} {
		if w := authRequest(h, r[0], r[1]); w.Code != http.StatusNoContent {
			t.Errorf("%s %s without a key: status %d, want it public", r[0], r[1], w.Code)
		}
	}
	for _, r := range [][2]string{
		{"GET", "/v1/models"}, {"GET", "/models"}, {"GET", "/props"}, {"POST", "/props"}, {"GET", "/slots"},
		{"GET", "/metrics"}, {"POST", "/completion"}, {"POST", "/v1/completions"}, {"POST", "/tokenize"},
		{"POST", "/detokenize"}, {"POST", "/apply-template"}, {"GET", "/healthz"}, {"GET", "/health/"},
		{"GET", "/index.html"}, {"GET", "/no/such/path"},
	} {
		wantInvalidKey(t, authRequest(h, r[0], r[1]), r)
	}
}

// TestAuthWhileLoading: llama-server answers every request "Loading model"
// (503) until the model is loaded, before it looks at the key; a good key
// passes on (to handlers that answer the same).
func TestAuthWhileLoading(t *testing.T) {
	h := authServer(t, false)
	for _, headers := range [][]string{nil, {"Authorization", "Bearer wrong"}} {
		w := authRequest(h, "POST", "/v1/completions", headers...)
		if w.Code != http.StatusServiceUnavailable || !json.Valid(w.Body.Bytes()) {
			t.Errorf("%q while loading: %d %s, want 503", headers, w.Code, w.Body.String())
		}
		var body errorBody
		json.Unmarshal(w.Body.Bytes(), &body)
		if body.Error != (errorDetail{Code: 503, Message: "Loading model", Type: typeUnavailable}) {
			t.Errorf("%q while loading: %s", headers, w.Body.String())
		}
	}
	if w := authRequest(h, "POST", "/v1/completions", "Authorization", "Bearer k1"); w.Code != http.StatusNoContent {
		t.Errorf("a good key while loading: status %d, want the request passed on", w.Code)
	}
}

// TestAuthWithoutKeys: with no key configured every request passes.
func TestAuthWithoutKeys(t *testing.T) {
	s, err := New(testConfig(), testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	h := s.authorize(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	for _, headers := range [][]string{nil, {"Authorization", "Bearer anything"}} {
		if w := authRequest(h, "POST", "/completion", headers...); w.Code != http.StatusNoContent {
			t.Errorf("%q without configured keys: status %d", headers, w.Code)
		}
	}
}

// TestAuthThroughHandler: the whole handler, before any model is loaded:
// "/" is public (and kvtrim, which has no web UI, answers 404 there).
func TestAuthThroughHandler(t *testing.T) {
	cfg := testConfig()
	cfg.APIKeys = []string{"k1"}
	s, err := New(cfg, testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	s.eng.Store(&engine{}) // authorize's "loaded"; the routes below touch no model
	h := s.Handler()
	if w := authRequest(h, "GET", "/"); w.Code != http.StatusNotFound {
		t.Errorf("GET / without a key: %d %s, want 404", w.Code, w.Body.String())
	}
	wantInvalidKey(t, authRequest(h, "GET", "/no/such/path"), "GET /no/such/path")
	if w := authRequest(h, "GET", "/no/such/path", "Authorization", "k1"); w.Code != http.StatusNotFound {
		t.Errorf("GET /no/such/path with a bare key: %d %s, want 404", w.Code, w.Body.String())
	}
}
