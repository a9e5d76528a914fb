package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestCORSProxy: /cors-proxy answers 403 unless enabled (llama-server's
// --webui-mcp-proxy); enabled, it forwards the method, the body and only
// the x-llama-server-proxy-header-* headers (as their names), never the
// caller's credentials or cookies, and answers with the target's status,
// type and body, a 204 included. Bad targets get a 400, and the API key
// is required as everywhere.
func TestCORSProxy(t *testing.T) {
	type seen struct {
		method, body string
		header       http.Header
	}
	got := make(chan seen, 1)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, string(b), r.Header.Clone()}
		if r.URL.Path == "/empty" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"data":[1]}`)
	}))
	defer target.Close()

	code, b := startServer(t, testConfig()).do(t.Context(), http.MethodGet, "/cors-proxy?url="+target.URL, "")
	wantErrorBody := `{"error":{"message":"this feature is disabled","type":"feature_disabled"}}`
	if code != http.StatusForbidden || strings.TrimSpace(string(b)) != wantErrorBody {
		t.Errorf("disabled: %d %s", code, b)
	}

	cfg := testConfig()
	cfg.CORSProxy, cfg.APIKeys = true, []string{"k"}
	ts := startServer(t, cfg)
	ts.key = "k"
	req, _ := http.NewRequest(http.MethodPost, ts.http.URL+"/cors-proxy?url="+target.URL+"/mcp", strings.NewReader(`{"x":1}`))
	req.Header.Set("Authorization", "Bearer k")
	req.Header.Set("Cookie", "session=secret")
	req.Header.Set("X-Api-Key", "k")
	req.Header.Set("X-Llama-Server-Proxy-Header-Authorization", "Bearer explicit")
	req.Header.Set("x-llama-server-proxy-header-accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || string(body) != `{"data":[1]}` || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("proxied answer: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	s := <-got
	if s.method != http.MethodPost || s.body != `{"x":1}` || s.header.Get("Authorization") != "Bearer explicit" || s.header.Get("Accept") != "application/json" ||
		s.header.Get("Cookie") != "" || s.header.Get("X-Api-Key") != "" {
		t.Errorf("the target saw %s %q with headers %v", s.method, s.body, s.header)
	}
	if code, b := ts.do(t.Context(), http.MethodPost, "/cors-proxy?url="+target.URL+"/empty", "{}"); code != http.StatusNoContent || len(b) != 0 {
		t.Errorf("204: %d %q", code, b)
	}
	<-got
	for _, c := range []struct{ url, msg string }{
		{"", `give the target as "url"`},
		{"ftp://example.com/", "unsupported URL scheme"},
		{"http:///path", "missing host"},
		{"http://u:p@127.0.0.1/", "authentication in target URL"},
	} {
		code, b := ts.do(t.Context(), http.MethodGet, "/cors-proxy?url="+c.url, "")
		wantError(t, code, b, 400, typeInvalidRequest, c.msg)
	}
	ts.key = ""
	if code, _ := ts.do(t.Context(), http.MethodGet, "/cors-proxy?url="+target.URL, ""); code != http.StatusUnauthorized {
		t.Errorf("without the API key: %d", code)
	}
}
