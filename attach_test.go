package kvtrim_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/hooks"
)

// hostContext makes a context as another binding would, with the
// library's own calls: f32 cache, one thread, flash attention fa, and
// kvtrim's hook in its parameters when hook is set.
func hostContext(t *testing.T, m *kvtrim.Model, fa bindings.FlashAttn, hook *kvtrim.Hook) *bindings.Context {
	t.Helper()
	copt := bindings.ContextOptions{NCtx: 256, Threads: 1, FlashAttn: fa, CacheTypeK: bindings.CacheF32, CacheTypeV: bindings.CacheF32}
	if hook != nil {
		copt.EvalCallback, copt.EvalUserData = hook.Callback, hook.UserData
	}
	c, err := m.NewContext(copt)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newHook is a kvtrim hook closed when the test ends, or nil without want.
func newHook(t *testing.T, lib *bindings.Library, want bool) *kvtrim.Hook {
	if !want {
		return nil
	}
	h := kvtrim.NewHook(lib)
	t.Cleanup(h.Close)
	return h
}

// ownKept is what a session of kvtrim's own keeps of text with the same
// settings: an attached session must choose the same positions.
func ownKept(t *testing.T, m *kvtrim.Model, text, fa string, comp kvtrim.Compression) []int32 {
	t.Helper()
	s, _ := prefilled(t, m, kvtrim.SessionOptions{NCtx: 256, Threads: 1, FlashAttn: fa, CacheType: "f32", Compression: comp}, text)
	kept := statePositions(t, s.Context())
	slices.Sort(kept)
	return kept
}

// statePositions is the positions sequence 0 of c holds, in cell order,
// read from its saved state as a host would.
func statePositions(t *testing.T, c *bindings.Context) []int32 {
	t.Helper()
	state, err := c.SeqState(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	pos, err := hooks.StatePositions(state, 0)
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

// sameKept compares an attached session's kept positions with ownKept's.
func sameKept(t *testing.T, kept, own []int32) {
	t.Helper()
	got := slices.Clone(kept)
	slices.Sort(got)
	if !slices.Equal(got, own) {
		t.Errorf("kept %v, a session of kvtrim's own keeps %v", got, own)
	}
}

// TestAttachedEvictsExactly: a session attached to a context another
// binding made compresses it with SnapKV, with flash attention off and
// on: in place through kvtrim's hook there, or without it through a
// temporary context of kvtrim's own. The host's own memory calls then
// see only the kept cells, and the logits after the eviction equal those
// of a fresh context decoding the kept tokens. Closing the session leaves
// the host's context usable, and the host frees it.
func TestAttachedEvictsExactly(t *testing.T) {
	m := loadModel(t, "llama-2-tiny-random.gguf")
	lib := m.Library()
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 4)
	for _, c := range []struct {
		fa   string
		hook bool
	}{{"off", true}, {"on", true}, {"off", false}, {"on", false}} {
		fa := c.fa
		t.Run(fmt.Sprintf("fa-%s-hook-%v", c.fa, c.hook), func(t *testing.T) {
			hook := newHook(t, lib, c.hook)
			flash, _ := kvtrim.ParseFlashAttn(fa)
			host := hostContext(t, m, flash, hook)
			defer host.Close()
			s, err := kvtrim.Attach(lib, host.Handle(), kvtrim.AttachOptions{Hook: hook, FlashAttn: fa, Threads: 1, CacheType: "f32",
				Compression: kvtrim.Compression{Policy: "snapkv", Budget: 16, Window: 4}})
			if err != nil {
				t.Fatal(err)
			}
			toks, _ := s.Tokenize(text)
			if err := s.Prefill(context.Background(), toks); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); st.KeptCells != 16 || st.Attention != map[string]string{"on": "qk", "off": "softmax"}[fa] {
				t.Errorf("stats %+v", st)
			}
			s.Close()
			// The host's own view of its cache, after kvtrim let go.
			if got := host.Memory().SeqPosMax(0); int(got) != len(toks)-1 {
				t.Fatalf("host's pos max %d, want %d", got, len(toks)-1)
			}
			kept := statePositions(t, host)
			if len(kept) != 16 {
				t.Fatalf("the host's context holds %d cells, want 16", len(kept))
			}
			sameKept(t, kept, ownKept(t, m, text, fa, kvtrim.Compression{Policy: "snapkv", Budget: 16, Window: 4}))
			next, pos := toks[3], int32(len(toks))
			got := decodeOne(t, m, host, next, pos)
			want := keptTokensLogits(t, m, toks, kept, next, pos)
			if worst := maxAbsDiff(got, want); worst > 1e-3 {
				t.Errorf("logits after the attached eviction differ from a fresh context of the kept tokens by %g", worst)
			}
		})
	}
}

// TestAttachBadInput: a zero handle, a context already attached, and
// policies that read attention on a context without kvtrim's hook are
// refused in one line, and the host's context is left as it was.
func TestAttachBadInput(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	lib := m.Library()
	host := hostContext(t, m, bindings.FlashAttnAuto, nil)
	defer host.Close()
	attach := func(handle uintptr, policy string) error {
		s, err := kvtrim.Attach(lib, handle, kvtrim.AttachOptions{Compression: kvtrim.Compression{Policy: policy, Ratio: 0.2}})
		if err == nil {
			s.Close()
		}
		return err
	}
	for _, c := range []struct {
		handle uintptr
		policy string
		want   string
	}{
		{0, "snapkv", "handle is 0"},
		{host.Handle(), "h2o", "kvtrim's hook"},
	} {
		if err := attach(c.handle, c.policy); err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s on %#x: %v, want one line with %q", c.policy, c.handle, err, c.want)
		}
	}
	s, err := kvtrim.Attach(lib, host.Handle(), kvtrim.AttachOptions{Compression: kvtrim.Compression{Policy: "streaming", Sinks: 4, Recent: 60}})
	if err != nil {
		t.Fatalf("streaming needs no hook: %v", err)
	}
	if err := attach(host.Handle(), "knorm"); err == nil || !strings.Contains(err.Error(), "already attached") {
		t.Errorf("attaching twice: %v", err)
	}
	s.Close()
	if err := attach(host.Handle(), "knorm"); err != nil {
		t.Errorf("attaching again after close: %v", err)
	}
	// The host's context decodes as before.
	toks, err := m.Vocab().Tokenize("Once upon a time", true, false)
	if err != nil {
		t.Fatal(err)
	}
	decodeOne(t, m, host, toks[0], 0)
}

// TestAttachedPolicies: the policies that read no attention work on a
// context without kvtrim's hook (Knorm from the keys in the state,
// StreamingLLM from positions), and H2O works through the hook; each
// leaves the host's context holding its budget.
func TestAttachedPolicies(t *testing.T) {
	m := loadModel(t, "stories260K.gguf")
	lib := m.Library()
	prompt := strings.Repeat("Tom had a red ball. He liked to play with it in the park. ", 8)
	for _, c := range []struct {
		name  string
		hook  bool
		comp  kvtrim.Compression
		cells int
	}{
		{"knorm", false, kvtrim.Compression{Policy: "knorm", Budget: 40}, 40 + 12}, // a prompt policy: the generated tokens join
		{"streaming", false, kvtrim.Compression{Policy: "streaming", Sinks: 4, Recent: 28}, 32},
		{"h2o", true, kvtrim.Compression{Policy: "h2o", Heavy: 16, Recent: 16}, 32},
	} {
		t.Run(c.name, func(t *testing.T) {
			hook := newHook(t, lib, c.hook)
			host := hostContext(t, m, bindings.FlashAttnAuto, hook)
			defer host.Close()
			s, err := kvtrim.Attach(lib, host.Handle(), kvtrim.AttachOptions{Hook: hook, Threads: 1, Compression: c.comp})
			if err != nil {
				t.Fatal(err)
			}
			toks, _ := s.Tokenize(prompt)
			if err := s.Prefill(context.Background(), toks); err != nil {
				t.Fatal(err)
			}
			sampler := lib.NewSampler(bindings.SamplerOptions{Temp: 0})
			defer sampler.Close()
			var out strings.Builder
			err = s.Generate(context.Background(), sampler, kvtrim.GenerateOptions{MaxTokens: 12},
				func(_ kvtrim.Token, piece string) error { out.WriteString(piece); return nil })
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			held := statePositions(t, host)
			if len(held) > c.cells+1 || len(held) >= len(toks) || out.Len() == 0 {
				t.Errorf("the host's context holds %d cells (budget %d, prompt %d) after generating %q", len(held), c.cells, len(toks), out.String())
			}
		})
	}
}

// TestAttachedCompressesHostPrompt: a host that decoded its prompt itself
// (no hook) passes the tokens to Attach, and CompressPrompt compresses its
// sequence with SnapKV through a temporary context that decodes only the
// window again: it keeps what a session of kvtrim's own keeps (so the
// copied keys are read, not only the decoded ones), and the logits after
// equal those of a fresh context decoding the kept tokens, with flash
// attention off and on.
func TestAttachedCompressesHostPrompt(t *testing.T) {
	m := loadModel(t, "llama-2-tiny-random.gguf")
	lib := m.Library()
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 4)
	for _, fa := range []string{"off", "on"} {
		t.Run("fa-"+fa, func(t *testing.T) {
			flash, _ := kvtrim.ParseFlashAttn(fa)
			host := hostContext(t, m, flash, nil)
			defer host.Close()
			toks, err := m.Vocab().Tokenize(text, true, false)
			if err != nil {
				t.Fatal(err)
			}
			b := lib.NewBatch(len(toks), 1)
			for i, tok := range toks {
				b.Add(tok, int32(i), []bindings.SeqID{0}, i == len(toks)-1)
			}
			err = host.Decode(b)
			b.Close()
			if err != nil {
				t.Fatal(err)
			}
			s, err := kvtrim.Attach(lib, host.Handle(), kvtrim.AttachOptions{FlashAttn: fa, Threads: 1, CacheType: "f32", Prompt: toks,
				Compression: kvtrim.Compression{Policy: "snapkv", Budget: 16, Window: 4}})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.CompressPrompt(context.Background()); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); st.KeptCells != 16 || st.PromptTokens != len(toks) {
				t.Errorf("stats %+v", st)
			}
			s.Close()
			kept := statePositions(t, host)
			if len(kept) != 16 || int(kept[len(kept)-1]) != len(toks)-1 {
				t.Fatalf("the host's context holds %v", kept)
			}
			sameKept(t, kept, ownKept(t, m, text, fa, kvtrim.Compression{Policy: "snapkv", Budget: 16, Window: 4}))
			next, pos := toks[3], int32(len(toks))
			if worst := maxAbsDiff(decodeOne(t, m, host, next, pos), keptTokensLogits(t, m, toks, kept, next, pos)); worst > 1e-3 {
				t.Errorf("logits after compressing the host's prompt differ from a fresh context of the kept tokens by %g", worst)
			}
		})
	}
}
