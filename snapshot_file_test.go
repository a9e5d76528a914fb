package kvtrim_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// TestSnapshotFile: a snapshot written with its tokens reads back into a
// session that then answers as the original; a truncated or altered file
// is refused, never half-read.
func TestSnapshotFile(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	opt := kvtrim.SessionOptions{NCtx: 512, Threads: 1, Compression: kvtrim.Compression{Policy: "snapkv", Budget: 24}}
	s, toks := prefilled(t, m, opt, "Tom had a red ball. He liked to play with it in the park. One day the ball rolled away.")
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := kvtrim.WriteSnapshot(&buf, snap, toks); err != nil {
		t.Fatal(err)
	}
	want := greedyTokens(t, s, m, 12)
	read, gotToks, err := kvtrim.ReadSnapshot(bytes.NewReader(buf.Bytes()), 1<<30)
	if err != nil || !slices.Equal(gotToks, toks) {
		t.Fatalf("read back: %v, tokens %v", err, gotToks)
	}
	fresh, err := m.NewSession(opt)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := fresh.Restore(read); err != nil {
		t.Fatal(err)
	}
	// A restored cache has no logits after it: generating is refused (it
	// used to abort in llama.cpp), and appending a token brings them.
	sampler := m.Library().NewSampler(bindings.SamplerOptions{})
	defer sampler.Close()
	err = fresh.Generate(context.Background(), sampler, kvtrim.GenerateOptions{MaxTokens: 1}, func(kvtrim.Token, string) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "append at least one token") {
		t.Errorf("generate right after a restore: %v", err)
	}
	if err := fresh.Append(context.Background(), want[:1]); err != nil {
		t.Fatal(err)
	}
	if got := greedyTokens(t, fresh, m, 11); !slices.Equal(got, want[1:]) {
		t.Errorf("restored from the file: %v, the original %v", got, want[1:])
	}
	b := buf.Bytes()
	for name, bad := range map[string][]byte{
		"truncated":   b[:len(b)-10],
		"no header":   b[:10],
		"other magic": append([]byte("llamaS01"), b[8:]...),
		"empty":       nil,
		"too large":   b, // with a limit below its cells
	} {
		limit := 1 << 30
		if name == "too large" {
			limit = 100
		}
		if _, _, err := kvtrim.ReadSnapshot(bytes.NewReader(bad), limit); err == nil {
			t.Errorf("%s: read", name)
		}
	}
}
