package bindings

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"sync"
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
	if len(s.threads) != 0 {
		t.Errorf("unwatched threads kept: %d", len(s.threads))
	}
}

// TestLogSinkErrorsPerThread: operations watching their own OS threads get
// their own llama.cpp error lines, never another's, however the lines
// interleave; lines logged on unwatched threads are kept for no one.
func TestLogSinkErrorsPerThread(t *testing.T) {
	s := &logSink{log: zerolog.Nop()}
	const workers = 8
	var wg sync.WaitGroup
	got := make([]string, workers)
	for i := range workers {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tid := s.watch()
			for j := range 200 {
				s.callback(logInfo, cString(fmt.Sprintf("worker %d step %d\n", i, j)), 0)
				if j == 100 {
					s.callback(logError, cString(fmt.Sprintf("worker %d ", i)), 0)
					s.callback(logCont, cString("failed\n"), 0)
				}
				runtime.Gosched()
			}
			s.callback(logError, cString(fmt.Sprintf("worker %d failed again\n", i)), 0)
			got[i] = s.errorOf(tid)
		})
	}
	wg.Go(func() { // a decode failing elsewhere, unwatched
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for range 200 {
			s.callback(logError, cString("decode: no room\n"), 0)
			runtime.Gosched()
		}
	})
	wg.Wait()
	for i, e := range got {
		if want := fmt.Sprintf("worker %d failed", i); e != want {
			t.Errorf("worker %d's error: %q, want %q", i, e, want)
		}
	}
	if len(s.threads) != 0 {
		t.Errorf("%d threads' state left behind", len(s.threads))
	}
}

func TestBuildFromName(t *testing.T) {
	for in, want := range map[string]string{
		"/x/libllama.b8390.so":    "b8390",
		"/x/libllama.so":          "",
		"/x/libllama.so.0.5.0":    "",
		"/x/libllama.so.0.0.8390": "b8390",
		"/x/libllama.so.0.0.83x":  "",
		"/x/libllama.v0.4.0.so":   "v0.4.0",
	} {
		if got := buildFromName(in); got != want {
			t.Errorf("buildFromName(%q) = %q, want %q", in, got, want)
		}
	}
}
