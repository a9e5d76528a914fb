package bindings

import (
	"runtime"
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
// zerolog logger. llama.cpp prints lines in pieces, so the sink joins them,
// per OS thread, and writes a line when its newline arrives. Everything
// llama.cpp says is logged at debug level or below (kvtrim is quiet by
// default).
//
// An operation that wants llama.cpp's reason for a failure (loading a
// model, making a context) runs on a locked OS thread between watch and
// errorOf: the first error line llama.cpp logs on that thread meanwhile is
// kept for it, and only for it, so that concurrent operations (or a decode
// failing on another thread) never quote each other's messages.
type logSink struct {
	mu      sync.Mutex
	log     zerolog.Logger
	threads map[int]*threadLog
}

// threadLog is one OS thread's unfinished line, and the first error it
// logged while an operation watched it.
type threadLog struct {
	line     strings.Builder
	level    int32
	watched  bool
	firstErr string
}

func (s *logSink) callback(level int32, text *byte, _ uintptr) {
	msg := goString(text)
	tid := threadID()
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.thread(tid)
	if level != logCont {
		if t.line.Len() > 0 { // a new line began before the last one ended
			s.flush(tid, t)
		}
		t.level = level
	}
	t.line.WriteString(msg)
	if strings.HasSuffix(msg, "\n") {
		s.flush(tid, t)
	}
}

// thread is tid's state. Called with mu held.
func (s *logSink) thread(tid int) *threadLog {
	if s.threads == nil {
		s.threads = map[int]*threadLog{}
	}
	t := s.threads[tid]
	if t == nil {
		t = &threadLog{}
		s.threads[tid] = t
	}
	return t
}

// flush writes tid's line, and forgets the thread when nothing of it is
// left to keep. Called with mu held.
func (s *logSink) flush(tid int, t *threadLog) {
	line := strings.TrimRight(t.line.String(), "\n")
	t.line.Reset()
	if line != "" {
		ev := s.log.Debug()
		switch t.level {
		case logDebug:
			ev = s.log.Trace()
		case logError:
			if t.watched && t.firstErr == "" {
				t.firstErr = strings.TrimSpace(line)
			}
		}
		ev.Str("from", "llama.cpp").Msg(line)
	}
	if !t.watched {
		delete(s.threads, tid)
	}
}

// watch starts keeping the first error llama.cpp logs on the calling OS
// thread, which the caller has locked (runtime.LockOSThread); errorOf
// returns it. It returns the thread's id for errorOf.
func (s *logSink) watch() int {
	tid := threadID()
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.thread(tid)
	t.watched, t.firstErr = true, ""
	return tid
}

// errorOf ends watching thread tid and returns the first error line
// llama.cpp logged on it since watch (the most specific of a cascade), or
// "".
func (s *logSink) errorOf(tid int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.thread(tid)
	if t.line.Len() > 0 {
		s.flush(tid, t)
	}
	e := t.firstErr
	delete(s.threads, tid)
	return e
}

// SetLogger routes llama.cpp's log lines to log from now on. They arrive at
// debug level (llama.cpp's own debug lines at trace level).
func (l *Library) SetLogger(log zerolog.Logger) {
	l.logs.mu.Lock()
	l.logs.log = log
	l.logs.mu.Unlock()
}

// withLlamaError runs call, a llama.cpp call that logs why it fails, on a
// locked OS thread, and returns what it returns and the first error line
// llama.cpp logged on that thread meanwhile ("" for none).
func withLlamaError[T any](l *Library, call func() T) (T, string) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := l.logs.watch()
	v := call()
	return v, l.logs.errorOf(tid)
}

// quoteLlama appends llama.cpp's error line to msg, if it said one.
func quoteLlama(msg, llamaErr string) string {
	if llamaErr != "" {
		return msg + " (llama.cpp: " + llamaErr + ")"
	}
	return msg
}
