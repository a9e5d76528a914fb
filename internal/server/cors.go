package server

import (
	"net/http"
	"net/url"
)

// CORS is how the server answers browsers' cross-origin requests, as
// llama-server's --cors-origins, --cors-methods, --cors-headers and
// --cors-credentials set it.
type CORS struct {
	// Origins is the Access-Control-Allow-Origin value: "*" (with
	// credentials, every request's own Origin is echoed), "localhost"
	// (only an origin on localhost, 127.0.0.1 or ::1 is echoed), or the
	// value to send. "" is "*".
	Origins string
	// Methods and Headers answer preflights ("": llama-server's "GET,
	// POST, DELETE, OPTIONS" and "*").
	Methods, Headers string
	// NoCredentials sends Access-Control-Allow-Credentials: false
	// (llama-server's default is true).
	NoCredentials bool
}

// withDefaults fills llama-server's defaults.
func (c CORS) withDefaults() CORS {
	if c.Origins == "" {
		c.Origins = "*"
	}
	if c.Methods == "" {
		c.Methods = "GET, POST, DELETE, OPTIONS"
	}
	if c.Headers == "" {
		c.Headers = "*"
	}
	return c
}

// cors sets the CORS headers on every response, before anything else
// answers (a 401 or a 503 carries them too, so that a browser can read
// it), and answers preflights (OPTIONS) itself with an empty 200, as
// llama-server does.
func (s *Server) cors(next http.Handler) http.Handler {
	c := s.cfg.CORS.withDefaults()
	credentials := "true"
	if c.NoCredentials {
		credentials = "false"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		h := w.Header()
		switch {
		case c.Origins == "*" && !c.NoCredentials:
			if origin != "" {
				h.Set("Access-Control-Allow-Origin", origin)
			}
		case c.Origins == "localhost":
			if originIsLocalhost(origin) {
				h.Set("Access-Control-Allow-Origin", origin)
			}
		default:
			h.Set("Access-Control-Allow-Origin", c.Origins)
		}
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Credentials", credentials)
			h.Set("Access-Control-Allow-Methods", c.Methods)
			h.Set("Access-Control-Allow-Headers", c.Headers)
			h.Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusOK)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// originIsLocalhost reports whether an Origin header names this machine:
// localhost, 127.0.0.1 or ::1, any scheme and port.
func originIsLocalhost(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	switch u.Hostname() {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}
