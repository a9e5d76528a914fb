package kvtrim_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// greedyTokens generates n tokens and returns them.
func greedyTokens(t *testing.T, s *kvtrim.Session, m *kvtrim.Model, n int) []kvtrim.Token {
	t.Helper()
	sampler := m.Library().NewSampler(bindings.SamplerOptions{Temp: 0})
	defer sampler.Close()
	var out []kvtrim.Token
	if err := s.Generate(context.Background(), sampler, kvtrim.GenerateOptions{MaxTokens: n},
		func(tok kvtrim.Token, _ string) error { out = append(out, tok); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestContinueSharedPrefix: a second prompt that shares a prefix with what
// a session holds (its first prompt and part of its answer) is decoded
// after Truncate and Append of only the rest, and generates what a new
// session prefilled with the whole second prompt generates.
func TestContinueSharedPrefix(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	opt := kvtrim.SessionOptions{NCtx: 512, Threads: 1}
	s, first := prefilled(t, m, opt, "Tom had a red ball. He liked to play with it.")
	answer := greedyTokens(t, s, m, 20)
	more, err := s.Tokenize(" Then his friend came.")
	if err != nil {
		t.Fatal(err)
	}
	more = more[1:] // no second BOS
	shared := len(first) + 12
	second := append(append(append([]kvtrim.Token{}, first...), answer[:12]...), more...)
	if err := s.Truncate(shared); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(context.Background(), second[shared:]); err != nil {
		t.Fatal(err)
	}
	got := greedyTokens(t, s, m, 20)

	fresh, err := m.NewSession(opt)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := fresh.Prefill(context.Background(), second); err != nil {
		t.Fatal(err)
	}
	if want := greedyTokens(t, fresh, m, 20); !slices.Equal(got, want) {
		t.Errorf("continued %v, fresh %v", got, want)
	}
	if err := s.Truncate(s.Position() + 1); err == nil {
		t.Error("truncating past the held positions: no error")
	}
}

// TestContinueCompressed: a compressed session continues only its whole
// sequence: Append adds the next turn after it, Truncate inside it is
// refused.
func TestContinueCompressed(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	prompt := strings.Repeat("Tom had a red ball. He liked to play with it in the park. ", 6)
	s, _ := prefilled(t, m, kvtrim.SessionOptions{NCtx: 256, Threads: 1, Compression: kvtrim.Compression{Policy: "snapkv", Budget: 48, Window: 8}}, prompt)
	greedyTokens(t, s, m, 10)
	pos := s.Position()
	if err := s.Truncate(pos - 3); err == nil || !strings.Contains(err.Error(), "compressed") {
		t.Errorf("truncating inside a compressed cache: %v", err)
	}
	next, _ := s.Tokenize(" The end.")
	if err := s.Append(context.Background(), next[1:]); err != nil {
		t.Fatal(err)
	}
	if got, want := s.Position(), pos+len(next)-1; got != want || int(s.Context().Memory().SeqPosMax(0)) != want-1 {
		t.Errorf("after appending %d tokens at %d: position %d, last cached %d", len(next)-1, pos, got, s.Context().Memory().SeqPosMax(0))
	}
	if out := greedyTokens(t, s, m, 10); len(out) != 10 {
		t.Errorf("generated %d tokens after the appended turn", len(out))
	}
}
