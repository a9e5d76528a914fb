package toolcall

import "strings"

// Stream splits a streamed answer into the content that can be sent as it
// comes and the text held back because it is, or may become, a tool call.
// Call Write with each new piece of text, then Finish.
type Stream struct {
	f    *Format
	all  strings.Builder
	sent int  // bytes of all already given out as content
	held bool // a call has begun: nothing more is given out
	free bool // no call can begin any more: everything is given out
}

// NewStream starts a stream of an answer in format f.
func (f *Format) NewStream() *Stream { return &Stream{f: f} }

// Write adds a piece of the answer and returns the content that may be
// sent now.
func (s *Stream) Write(piece string) string {
	s.all.WriteString(piece)
	if s.held {
		return ""
	}
	all := s.all.String()
	if s.free {
		out := all[s.sent:]
		s.sent = len(all)
		return out
	}
	if s.f.atStart {
		lead := strings.TrimLeft(all, " \t\r\n")
		if lead == "" {
			return "" // a call may still begin
		}
		for _, m := range s.f.starts {
			if strings.HasPrefix(lead, m) || strings.HasPrefix(m, lead) {
				s.held = true
				return ""
			}
		}
		s.free = true // a call only begins an answer
		out := all[s.sent:]
		s.sent = len(all)
		return out
	}
	cut := len(all)
	for _, m := range s.f.starts {
		if i := strings.Index(all[s.sent:], m); i >= 0 && s.sent+i < cut {
			cut = s.sent + i
			s.held = true
		}
	}
	if !s.held {
		// Keep back a tail that may be the beginning of a marker.
		for _, m := range s.f.starts {
			for k := min(len(m)-1, len(all)-s.sent); k > 0; k-- {
				if strings.HasSuffix(all, m[:k]) {
					cut = min(cut, len(all)-k)
					break
				}
			}
		}
	}
	out := all[s.sent:cut]
	s.sent = cut
	return out
}

// Held is the text held back, as written.
func (s *Stream) Held() string { return s.all.String()[s.sent:] }

// Finish reads the text held back: the content left to send and the
// calls.
func (s *Stream) Finish() (string, []Call, error) {
	rest := s.all.String()[s.sent:]
	if rest == "" {
		return rest, nil, nil
	}
	content, calls, err := s.f.parse(rest)
	if err != nil {
		return "", nil, err
	}
	if len(calls) == 0 {
		return rest, nil, nil // held for nothing: give it back as it was
	}
	for i := range calls {
		calls[i].ID = newID()
	}
	return content, calls, nil
}
