package server

import (
	"encoding/json"
	"net/http"
	"time"
)

// sse writes a generation's answer: server-sent events ("data: JSON"
// blocks, each flushed), or one JSON body. Each write must be done within
// timeout (when > 0), so that a client that stops reading gives up its
// request, and with it its slot, as llama-server's socket timeout does.
type sse struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	started bool
}

func newSSE(w http.ResponseWriter, timeout time.Duration) *sse {
	return &sse{w: w, rc: http.NewResponseController(w), timeout: timeout}
}

// deadline gives the next write its time.
func (s *sse) deadline() {
	if s.timeout > 0 {
		s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	}
}

// whole answers v as one JSON body.
func (s *sse) whole(v any) {
	s.deadline()
	writeJSON(s.w, http.StatusOK, v)
}

// start sends the headers of an event stream.
func (s *sse) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	s.w.WriteHeader(http.StatusOK)
}

// namedEvent is an event with a name ("event: NAME" before its data), as
// Anthropic's streams send them.
type namedEvent struct {
	name string
	data any
}

// send writes v as one event (a namedEvent with its name).
func (s *sse) send(v any) error {
	name := ""
	if e, ok := v.(namedEvent); ok {
		name, v = e.name, e.data
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.event(name, b)
}

// raw writes one event of already encoded data.
func (s *sse) raw(data []byte) error { return s.event("", data) }

// event writes one event, named when name is not "".
func (s *sse) event(name string, data []byte) error {
	s.start()
	buf := make([]byte, 0, len(name)+len(data)+16)
	if name != "" {
		buf = append(append(append(buf, "event: "...), name...), '\n')
	}
	buf = append(append(append(buf, "data: "...), data...), "\n\n"...)
	s.deadline()
	if _, err := s.w.Write(buf); err != nil {
		return err
	}
	return s.rc.Flush()
}

// fail ends a stream with an error: as an HTTP error when nothing was sent
// yet, else as a last event holding llama-server's error JSON.
func (s *sse) fail(err error) {
	if !s.started {
		s.deadline()
		writeError(s.w, err)
		return
	}
	s.send(asAPIError(err).body())
}
