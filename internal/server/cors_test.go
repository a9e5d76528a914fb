package server

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rs/zerolog"
)

// TestCORS: llama-server's CORS rules. By default every Origin is echoed
// (with credentials); "localhost" echoes only this machine's origins; a
// fixed value is sent as it is. A preflight gets an empty 200 with the
// methods, headers and credentials and needs no key; other answers (a
// 401, a 503 while loading) carry the origin too.
func TestCORS(t *testing.T) {
	preflight := func(h http.Handler, origin string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodOptions, "/completions", nil)
		r.Header.Set("Origin", origin)
		r.Header.Set("Access-Control-Request-Method", "POST")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	handler := func(c CORS, keys ...string) http.Handler {
		cfg := testConfig()
		cfg.CORS, cfg.APIKeys = c, keys
		s, err := New(cfg, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		return s.Handler()
	}
	def := handler(CORS{}, "secret")
	w := preflight(def, "web.mydomain.fr")
	h := w.Header()
	if w.Code != 200 || h.Get("Access-Control-Allow-Origin") != "web.mydomain.fr" || h.Get("Access-Control-Allow-Credentials") != "true" ||
		h.Get("Access-Control-Allow-Methods") != "GET, POST, DELETE, OPTIONS" || h.Get("Access-Control-Allow-Headers") != "*" || w.Body.Len() != 0 {
		t.Errorf("default preflight: %d %v %q", w.Code, h, w.Body.String())
	}
	r := httptest.NewRequest(http.MethodPost, "/completion", nil)
	r.Header.Set("Origin", "http://app.example")
	w = httptest.NewRecorder()
	def.ServeHTTP(w, r)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Access-Control-Allow-Origin") != "http://app.example" {
		t.Errorf("an answer before the model loads: %d, origin %q", w.Code, w.Header().Get("Access-Control-Allow-Origin"))
	}

	local := handler(CORS{Origins: "localhost"})
	for _, o := range []string{"http://localhost", "http://localhost:8080", "http://127.0.0.1:3000", "http://[::1]"} {
		if got := preflight(local, o).Header().Get("Access-Control-Allow-Origin"); got != o {
			t.Errorf("localhost: %s got %q", o, got)
		}
	}
	for _, o := range []string{"http://evil.com", "http://notlocalhost", "http://localhost.evil.com", "::bad"} {
		if w := preflight(local, o); w.Code != 200 || w.Header().Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("localhost: %s got %d %q", o, w.Code, w.Header().Get("Access-Control-Allow-Origin"))
		}
	}
	fixed := handler(CORS{Origins: "https://one.example", Methods: "GET", NoCredentials: true})
	w = preflight(fixed, "https://other.example")
	if h := w.Header(); h.Get("Access-Control-Allow-Origin") != "https://one.example" || h.Get("Access-Control-Allow-Methods") != "GET" || h.Get("Access-Control-Allow-Credentials") != "false" {
		t.Errorf("fixed origin: %v", h)
	}
}
