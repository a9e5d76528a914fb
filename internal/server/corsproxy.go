package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// llama-server's CORS proxy (GET and POST /cors-proxy?url=URL, with
// --webui-mcp-proxy), which its web UI uses to reach MCP servers that send
// no CORS headers. It forwards the request's body, and of its headers only
// those named x-llama-server-proxy-header-NAME (as NAME): the caller's own
// credentials and cookies never reach the target. Without the flag it
// answers 403, as llama-server does. Like every endpoint but /health, it
// takes the API key when the server has one.

// proxyHeaderPrefix marks the headers the proxy forwards.
const proxyHeaderPrefix = "x-llama-server-proxy-header-"

// proxyTimeout bounds a proxied exchange, as llama-server's 10 minutes.
const proxyTimeout = 600 * time.Second

// handleCORSProxy answers /cors-proxy.
func (s *Server) handleCORSProxy(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.CORSProxy {
		writeJSON(w, http.StatusForbidden, map[string]any{"error": map[string]string{
			"message": "this feature is disabled", "type": "feature_disabled",
		}})
		return
	}
	target, err := proxyTarget(r.URL.Query().Get("url"))
	if err != nil {
		writeError(w, err)
		return
	}
	var body io.Reader
	if r.Method == http.MethodPost {
		b, err := readBody(r)
		if err != nil {
			writeError(w, err)
			return
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(r.Context(), proxyTimeout)
	defer cancel()
	out, err := http.NewRequestWithContext(ctx, r.Method, target.String(), body)
	if err != nil {
		writeError(w, badRequest("url: %v", err))
		return
	}
	for name, values := range r.Header {
		forwarded, ok := strings.CutPrefix(strings.ToLower(name), proxyHeaderPrefix)
		if !ok || forwarded == "" || forwarded == "accept-encoding" || forwarded == "transfer-encoding" {
			continue
		}
		for _, v := range values {
			out.Header.Add(forwarded, v)
		}
	}
	resp, err := http.DefaultClient.Do(out)
	if err != nil {
		s.log.Debug().Err(err).Str("url", target.Redacted()).Msg("cors proxy")
		writeError(w, &APIError{Code: http.StatusBadGateway, Type: typeServer, Message: fmt.Sprintf("proxy to %s: %v", target.Host, err)})
		return
	}
	defer resp.Body.Close()
	for name, values := range resp.Header {
		switch lower := strings.ToLower(name); {
		case lower == "server" || lower == "transfer-encoding" || lower == "content-length" || lower == "keep-alive",
			strings.HasPrefix(lower, "access-control-"): // the server's own CORS headers answer the browser
			continue
		}
		w.Header()[name] = values
	}
	w.WriteHeader(resp.StatusCode)
	if _, err := io.Copy(flushWriter{w}, resp.Body); err != nil {
		s.log.Debug().Err(err).Msg("cors proxy: copy the answer")
	}
}

// proxyTarget checks the url parameter: an absolute http or https URL with
// a host and no credentials.
func proxyTarget(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case raw == "":
		return nil, badRequest(`give the target as "url": /cors-proxy?url=http://host/path`)
	case err != nil:
		return nil, badRequest("url %q: %v", raw, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, badRequest("url %q: unsupported URL scheme %q (give http or https)", raw, u.Scheme)
	case u.Host == "":
		return nil, badRequest("url %q: invalid target URL: missing host", raw)
	case u.User != nil:
		return nil, badRequest("url %q: authentication in target URL is not supported", raw)
	}
	return u, nil
}

// flushWriter flushes after each write, so that a streamed answer (an MCP
// server's events) reaches the client as it comes.
type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}
