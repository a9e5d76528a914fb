package bindings

import (
	"strings"
	"sync"

	"github.com/rs/zerolog"
)

// ggml_log_level values.
const (
	logDebug = 1
	logInfo  = 2
	logWarn  = 3
	logError = 4
	logCont  = 5 // continuation of the previous line, not a level
)

// logSink receives llama.cpp's and ggml's log lines and writes them to a
// zerolog logger. llama.cpp prints lines in pieces, so the sink joins them
// and writes a line when its newline arrives. Everything llama.cpp says is
// logged at debug level or below (kvtrim is quiet by default); its errors are
// also kept so that kvtrim's own error messages can quote them.
type logSink struct {
	mu         sync.Mutex
	log        zerolog.Logger
	line       strings.Builder
	level      int32
	firstError string // the first error line since the last takeError
}

func (s *logSink) callback(level int32, text *byte, _ uintptr) {
	msg := goString(text)
	s.mu.Lock()
	defer s.mu.Unlock()
	if level != logCont {
		if s.line.Len() > 0 { // a new line began before the last one ended
			s.flush()
		}
		s.level = level
	}
	s.line.WriteString(msg)
	if strings.HasSuffix(msg, "\n") {
		s.flush()
	}
}

func (s *logSink) flush() {
	line := strings.TrimRight(s.line.String(), "\n")
	s.line.Reset()
	if line == "" {
		return
	}
	ev := s.log.Debug()
	switch s.level {
	case logDebug:
		ev = s.log.Trace()
	case logError:
		if s.firstError == "" {
			s.firstError = strings.TrimSpace(line)
		}
	}
	ev.Str("from", "llama.cpp").Msg(line)
}

// takeError returns the first error line llama.cpp logged since the
// previous call (the most specific of a cascade), or "", and forgets it.
func (s *logSink) takeError() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.line.Len() > 0 {
		s.flush()
	}
	e := s.firstError
	s.firstError = ""
	return e
}

// SetLogger routes llama.cpp's log lines to log from now on. They arrive at
// debug level (llama.cpp's own debug lines at trace level).
func (l *Library) SetLogger(log zerolog.Logger) {
	l.logs.mu.Lock()
	l.logs.log = log
	l.logs.mu.Unlock()
}

// withLlamaError appends llama.cpp's last logged error to msg, if it said one.
func (l *Library) withLlamaError(msg string) string {
	if e := l.logs.takeError(); e != "" {
		return msg + " (llama.cpp: " + e + ")"
	}
	return msg
}
