package bindings

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestLogSinkJoinsContinuations(t *testing.T) {
	var buf bytes.Buffer
	s := &logSink{log: zerolog.New(&buf).Level(zerolog.TraceLevel)}
	say := func(level int32, text string) { s.callback(level, cString(text), 0) }
	say(logInfo, "loading ")
	say(logCont, "model")
	say(logCont, "... done\n")
	say(logError, "first failure\n")
	say(logWarn, "half a line")
	say(logError, "second failure\n") // a new line flushes the half one
	say(logDebug, "detail\n")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		`{"level":"debug","from":"llama.cpp","message":"loading model... done"}`,
		`{"level":"debug","from":"llama.cpp","message":"first failure"}`,
		`{"level":"debug","from":"llama.cpp","message":"half a line"}`,
		`{"level":"debug","from":"llama.cpp","message":"second failure"}`,
		`{"level":"trace","from":"llama.cpp","message":"detail"}`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if e := s.takeError(); e != "first failure" {
		t.Errorf("takeError = %q, want the first error", e)
	}
	if e := s.takeError(); e != "" {
		t.Errorf("takeError did not forget: %q", e)
	}
}

func TestVersionFromName(t *testing.T) {
	for in, want := range map[string]string{
		"/x/libllama.b8390.so":  " (its file name says b8390)",
		"/x/libllama.so":        "",
		"/x/libllama.so.0.5.0":  "",
		"/x/libllama.v0.4.0.so": " (its file name says v0.4.0)",
	} {
		if got := versionFromName(in); got != want {
			t.Errorf("versionFromName(%q) = %q, want %q", in, got, want)
		}
	}
}
