package bindings_test

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/internal/testenv"
)

func loadStories(t *testing.T) (*bindings.Library, *bindings.Model) {
	t.Helper()
	lib := testenv.Library(t)
	m, err := lib.LoadModel(testenv.ModelPath(t, "stories260K.gguf"), bindings.ModelOptions{GPULayers: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return lib, m
}

func TestLibraryVersionAndBackends(t *testing.T) {
	lib := testenv.Library(t)
	if lib.Release == nil || !strings.HasPrefix(lib.Version, lib.Release.Name) {
		t.Errorf("version %q, release %v", lib.Version, lib.Release)
	}
	if want := os.Getenv("KVTRIM_TEST_RELEASE"); want != "" && (lib.Release == nil || lib.Release.Name != want) {
		t.Errorf("loaded as release %v, want %s (KVTRIM_TEST_RELEASE)", lib.Release, want)
	}
	if lib.GGMLVersion == "" {
		t.Error("no ggml version")
	}
	hasCPU := false
	for _, b := range lib.Backends() {
		hasCPU = hasCPU || b == "CPU"
	}
	if !hasCPU {
		t.Errorf("backends %v: no CPU backend (ggml_backend_load_all_from_path not called?)", lib.Backends())
	}
	again, err := bindings.Load(lib.LlamaPath)
	if err != nil || again != lib {
		t.Errorf("loading the same library again: %v, %p != %p", err, again, lib)
	}
}

func TestModelMetadata(t *testing.T) {
	_, m := loadStories(t)
	got := []int{m.NLayer(), m.NHead(), m.NHeadKV(), m.NEmbd(), m.NCtxTrain(), m.Vocab().NTokens()}
	want := []int{5, 8, 4, 64, 2048, 512} // from MODELS.md
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("n_layer, n_head, n_head_kv, n_embd, n_ctx_train, n_vocab = %v, want %v", got, want)
		}
	}
	if m.Arch() != "llama" {
		t.Errorf("arch %q", m.Arch())
	}
	// llama's RoPE: adjacent pairs over the whole head (8 values), base
	// 10000, no scaling.
	if r, ok := m.Rope(); !ok || r != (bindings.Rope{Neox: false, Dims: 8, Base: 10000, Scale: 1}) {
		t.Errorf("rope %+v, %v", r, ok)
	}
	if m.ChatTemplate() != "" {
		t.Errorf("stories260K has no chat template, got %q", m.ChatTemplate())
	}
	if _, err := m.ApplyChatTemplate("", []bindings.ChatMessage{{Role: "user", Content: "hi"}}, true); err == nil {
		t.Error("applying a missing chat template did not fail")
	}
	out, err := m.ApplyChatTemplate("chatml", []bindings.ChatMessage{{Role: "user", Content: "hi"}}, true)
	if err != nil || !strings.Contains(out, "<|im_start|>user\nhi<|im_end|>") || !strings.HasSuffix(out, "<|im_start|>assistant\n") {
		t.Errorf("chatml template: %q, %v", out, err)
	}
}

func TestVocab(t *testing.T) {
	_, m := loadStories(t)
	v := m.Vocab()
	if v.BOS() != 1 || v.EOS() != 2 || !v.IsEOG(2) || v.IsEOG(100) {
		t.Errorf("BOS %d EOS %d", v.BOS(), v.EOS())
	}
	text := "Once upon a time, a little dog ran."
	toks, err := v.Tokenize(text, true, false)
	if err != nil {
		t.Fatal(err)
	}
	if toks[0] != v.BOS() || len(toks) < 8 {
		t.Fatalf("tokens %v", toks)
	}
	if got := v.Detokenize(toks[1:], false, false); got != text && got != " "+text {
		t.Errorf("detokenize = %q", got)
	}
	var pieces strings.Builder
	for _, tok := range toks[1:] {
		pieces.WriteString(v.Piece(tok, false))
	}
	if got := strings.TrimPrefix(pieces.String(), " "); got != text {
		t.Errorf("pieces = %q", got)
	}
	if v.Piece(v.EOS(), true) == "" {
		t.Error("special piece of EOS is empty")
	}
	// A long text needs the second, resized tokenize call.
	long := strings.Repeat("a b ", 5000)
	if toks, err := v.Tokenize(long, false, false); err != nil || len(toks) < 5000 {
		t.Errorf("long tokenize: %d tokens, %v", len(toks), err)
	}
}

// decodeAll decodes tokens at positions from 0 and returns the last logits.
func decodeAll(t *testing.T, lib *bindings.Library, ctx *bindings.Context, toks []bindings.Token, pos0 bindings.Pos) []float32 {
	t.Helper()
	b := lib.NewBatch(len(toks), 1)
	defer b.Close()
	for i, tok := range toks {
		if !b.Add(tok, pos0+bindings.Pos(i), []bindings.SeqID{0}, i == len(toks)-1) {
			t.Fatal("batch full")
		}
	}
	if err := ctx.Decode(b); err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), ctx.Logits(-1)...)
}

func maxAbsDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// newCtx makes a small single-threaded context over m.
func newCtx(t *testing.T, m *bindings.Model) *bindings.Context {
	t.Helper()
	// An F32 cache: a shifted F16 key is rounded again, which moves
	// logits by about 1e-2 and would hide real errors at 1e-3.
	ctx, err := m.NewContext(bindings.ContextOptions{NCtx: 256, Threads: 1, CacheTypeK: bindings.CacheF32, CacheTypeV: bindings.CacheF32})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctx.Close)
	return ctx
}

func tokenize(t *testing.T, m *bindings.Model, text string, bos bool) []bindings.Token {
	t.Helper()
	toks, err := m.Vocab().Tokenize(text, bos, false)
	if err != nil {
		t.Fatal(err)
	}
	return toks
}

// TestMemoryOps checks seq_rm, seq_add and pos_min/max against decodes that
// must give the same logits: removing the tail equals never decoding it, and
// shifting every position equals decoding at the shifted positions.
func TestMemoryOps(t *testing.T) {
	lib, m := loadStories(t)
	toks := tokenize(t, m, "Once upon a time, there was a little girl named Lily. She loved to play.", true)
	next := tokenize(t, m, " One day", false)
	n := bindings.Pos(len(toks))

	a := newCtx(t, m)
	mem := a.Memory()
	decodeAll(t, lib, a, toks, 0)
	if mem.SeqPosMin(0) != 0 || mem.SeqPosMax(0) != n-1 || !mem.CanShift() {
		t.Fatalf("pos range [%d, %d], can shift %v", mem.SeqPosMin(0), mem.SeqPosMax(0), mem.CanShift())
	}
	if !mem.SeqRm(0, 10, -1) || mem.SeqPosMax(0) != 9 {
		t.Fatalf("seq_rm of the tail: pos max %d", mem.SeqPosMax(0))
	}
	got := decodeAll(t, lib, a, next, 10)
	want := decodeAll(t, lib, newCtx(t, m), append(append([]bindings.Token(nil), toks[:10]...), next...), 0)
	if d := maxAbsDiff(got, want); d > 1e-3 {
		t.Errorf("after seq_rm of the tail, logits differ from a fresh decode by %g", d)
	}

	b := newCtx(t, m)
	decodeAll(t, lib, b, toks, 0)
	b.Memory().SeqAdd(0, -1, -1, 7)
	if b.Memory().SeqPosMin(0) != 7 || b.Memory().SeqPosMax(0) != n+6 {
		t.Fatalf("after seq_add +7: [%d, %d]", b.Memory().SeqPosMin(0), b.Memory().SeqPosMax(0))
	}
	got = decodeAll(t, lib, b, next, n+7)
	c := newCtx(t, m)
	decodeAll(t, lib, c, toks, 7)
	want = decodeAll(t, lib, c, next, n+7)
	if d := maxAbsDiff(got, want); d > 1e-3 {
		t.Errorf("after seq_add, logits differ from a decode at the shifted positions by %g", d)
	}
}

// TestStateRoundTripCompacts: saving a sequence with holes, clearing it and
// loading it back (kvtrim's compaction) keeps the logits, with the _ext
// (host and on-device) and the plain forms. Positions shift after the round
// trip: llama.cpp applies a seq_add to the keys only at the next decode, and
// a state saved before that decode carries the new positions with keys still
// rotated for the old ones (the last subtest shows it), so kvtrim compacts
// first and shifts second.
func TestStateRoundTripCompacts(t *testing.T) {
	lib, m := loadStories(t)
	toks := tokenize(t, m, "Once upon a time, there was a little girl named Lily. She loved to play.", true)
	next := tokenize(t, m, " One day", false)
	n := bindings.Pos(len(toks))
	evict := func(ctx *bindings.Context) {
		decodeAll(t, lib, ctx, toks, 0)
		ctx.Memory().SeqRm(0, 3, 8)
	}
	shift := func(ctx *bindings.Context) { ctx.Memory().SeqAdd(0, 8, -1, -5) }
	ref := newCtx(t, m)
	evict(ref)
	shift(ref)
	want := decodeAll(t, lib, ref, next, n-5)

	for _, form := range []string{"ext", "ext-on-device", "plain", "shift-before-save"} {
		t.Run(form, func(t *testing.T) {
			ctx := newCtx(t, m)
			evict(ctx)
			if form == "shift-before-save" {
				shift(ctx)
			}
			var state []byte
			var err error
			switch form {
			case "ext":
				state, err = ctx.SeqState(0, 0)
			case "ext-on-device":
				state, err = ctx.SeqState(0, bindings.StateOnDevice)
			case "plain", "shift-before-save":
				state, err = ctx.SeqStateBasic(0)
			}
			if err != nil {
				t.Fatal(err)
			}
			ctx.Memory().SeqRm(0, -1, -1)
			if ctx.Memory().SeqPosMax(0) != -1 {
				t.Fatal("sequence not empty after seq_rm of all")
			}
			switch form {
			case "ext":
				err = ctx.SetSeqState(0, state, 0)
			case "ext-on-device":
				err = ctx.SetSeqState(0, state, bindings.StateOnDevice)
			case "plain", "shift-before-save":
				err = ctx.SetSeqStateBasic(0, state)
			}
			if err != nil {
				t.Fatal(err)
			}
			if form != "shift-before-save" {
				if ctx.Memory().SeqPosMax(0) != n-1 {
					t.Fatalf("pos max after round trip %d, want %d", ctx.Memory().SeqPosMax(0), n-1)
				}
				shift(ctx)
			}
			d := maxAbsDiff(decodeAll(t, lib, ctx, next, n-5), want)
			if form == "shift-before-save" {
				if d < 1e-2 {
					t.Errorf("a shift pending at save time survived the round trip (logits within %g): llama.cpp changed, revisit the compaction order", d)
				}
				return
			}
			if d > 1e-3 {
				t.Errorf("logits after the round trip differ by %g", d)
			}
		})
	}
	if err := ref.SetSeqState(1, []byte("junk"), 0); err == nil {
		t.Error("loading a junk state did not fail")
	}
}

func TestDecodeErrors(t *testing.T) {
	lib, m := loadStories(t)
	ctx, err := m.NewContext(bindings.ContextOptions{NCtx: 64, NBatch: 64, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	b := lib.NewBatch(64, 1)
	defer b.Close()
	if err := ctx.Decode(b); err == nil {
		t.Error("empty batch decoded")
	}
	b.Add(1, 0, []bindings.SeqID{0}, true)
	if err := ctx.Decode(b); err != nil {
		t.Fatal(err)
	}
	b.Clear()
	b.Add(1, 5, []bindings.SeqID{0}, true) // a gap after position 0
	if err := ctx.Decode(b); err == nil {
		t.Error("a batch at the wrong position decoded")
	}
	if b.Add(1, 0, nil, true) || b.Add(1, 0, []bindings.SeqID{0, 1}, true) {
		t.Error("Add accepted a token in no sequence, or in more than the batch holds")
	}
}

func TestSamplerSeed(t *testing.T) {
	lib, m := loadStories(t)
	run := func(seed uint32) []bindings.Token {
		ctx, err := m.NewContext(bindings.ContextOptions{NCtx: 128, Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer ctx.Close()
		s := lib.NewSampler(bindings.SamplerOptions{Temp: 1.5, TopK: 100, TopP: 0.99, MinP: 0.01, Seed: seed})
		defer s.Close()
		toks, _ := m.Vocab().Tokenize("Once upon a time", true, false)
		decodeAll(t, lib, ctx, toks, 0)
		var out []bindings.Token
		for i := range 24 {
			tok := s.Sample(ctx, -1)
			out = append(out, tok)
			decodeAll(t, lib, ctx, []bindings.Token{tok}, bindings.Pos(len(toks)+i))
		}
		return out
	}
	a, b, c := run(1), run(1), run(2)
	if !equal(a, b) {
		t.Errorf("same seed, different tokens: %v %v", a, b)
	}
	if equal(a, c) {
		t.Errorf("seeds 1 and 2 gave the same 24 tokens at temperature 1.5: %v", a)
	}
}

func equal(a, b []bindings.Token) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestLocateOrder(t *testing.T) {
	root := t.TempDir()
	mk := func(dir string) string {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "libllama.so")
		os.WriteFile(p, nil, 0o644)
		return p
	}
	explicit := mk(filepath.Join(root, "explicit"))
	envLib := mk(filepath.Join(root, "env"))
	toolLib := mk(filepath.Join(root, "tool", "lib"))
	toolBin := filepath.Join(root, "tool", "bin", "llama-server")
	os.MkdirAll(filepath.Dir(toolBin), 0o755)
	os.WriteFile(toolBin, nil, 0o755)
	cache := filepath.Join(root, "cache")
	vars := map[string]string{"KVTRIM_LIB": filepath.Dir(envLib), "XDG_CACHE_HOME": cache}
	env := bindings.Env{
		Getenv: func(k string) string { return vars[k] },
		LookPath: func(name string) (string, error) {
			if name == "llama-server" {
				return toolBin, nil
			}
			return "", os.ErrNotExist
		},
	}
	if got, _ := bindings.Locate(filepath.Dir(explicit), env); got != explicit {
		t.Errorf("--lib: got %q", got)
	}
	if got, _ := bindings.Locate("", env); got != envLib {
		t.Errorf("KVTRIM_LIB: got %q", got)
	}
	delete(vars, "KVTRIM_LIB")
	if got, places := bindings.Locate("", env); got != toolLib {
		t.Errorf("llama-server's ../lib: got %q (%v)", got, places)
	}
	env.LookPath = func(string) (string, error) { return "", os.ErrNotExist }
	ldLib := mk(filepath.Join(root, "ld", "b"))
	vars["LD_LIBRARY_PATH"] = filepath.Join(root, "ld", "a") + ":" + filepath.Dir(ldLib)
	if got, _ := bindings.Locate("", env); got != ldLib {
		t.Errorf("LD_LIBRARY_PATH: got %q", got)
	}
	delete(vars, "LD_LIBRARY_PATH")
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/libllama.so"); err == nil {
		t.Skip("a system libllama is installed: the cache comes after it")
	}
	older := mk(bindings.CacheDirFor(env, "b8390"))
	if got, _ := bindings.Locate("", env); got != older {
		t.Errorf("another release's cache, with the default's empty: got %q", got)
	}
	cached := mk(bindings.CacheDir(env))
	got, places := bindings.Locate("", env)
	if got != cached && !strings.HasPrefix(got, "/usr") && !strings.HasPrefix(got, "/opt") {
		t.Errorf("cache: got %q", got)
	}
	if !strings.HasPrefix(bindings.CacheDir(env), filepath.Join(cache, "kvtrim", "lib", "v")) {
		t.Errorf("cache dir %s", bindings.CacheDir(env))
	}
	last := places[len(places)-1]
	if got == cached && (last.Source != "cache" || last.Found != cached) {
		t.Errorf("last place %+v", last)
	}
}

// TestConcurrentLoadErrors: models that fail to load at the same time each
// quote their own llama.cpp error, never another's.
func TestConcurrentLoadErrors(t *testing.T) {
	lib := testenv.Library(t)
	good, err := os.ReadFile(testenv.ModelPath(t, "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string][]byte{
		"truncated.gguf":   good[:len(good)/3],
		"header-only.gguf": good[:1000],
		"bad-version.gguf": append([]byte("GGUF\x63\x00\x00\x00"), good[8:4096]...),
	}
	alone := map[string]string{} // each file's error, loaded alone
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := lib.LoadModel(path, bindings.ModelOptions{})
		if err == nil || !strings.Contains(err.Error(), "(llama.cpp: ") {
			t.Fatalf("%s loaded alone: %v", name, err)
		}
		alone[path] = err.Error()
	}
	quotes := map[string]bool{}
	for _, e := range alone {
		_, q, _ := strings.Cut(e, "(llama.cpp: ")
		quotes[q] = true
	}
	if len(quotes) != len(files) {
		t.Fatalf("the files' llama.cpp errors are not all different: %v", alone)
	}
	var wg sync.WaitGroup
	for range 4 {
		for path, want := range alone {
			wg.Go(func() {
				if _, err := lib.LoadModel(path, bindings.ModelOptions{}); err == nil || err.Error() != want {
					t.Errorf("%s, loaded beside others: %v\nalone: %s", filepath.Base(path), err, want)
				}
			})
		}
	}
	wg.Wait()
}

// TestSamplerLogitBias: llama.cpp's logit-bias sampler runs before the
// others, greedy included: banning the best token picks the next best, and
// a bias can lift another over it.
func TestSamplerLogitBias(t *testing.T) {
	lib, _ := loadStories(t)
	logits := []float32{0.1, 3, 2, 0.5}
	sample := func(o bindings.SamplerOptions) bindings.Token {
		s := lib.NewSampler(o)
		defer s.Close()
		tok, err := s.SampleLogits(logits)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	if got := sample(bindings.SamplerOptions{}); got != 1 {
		t.Fatalf("greedy without bias picked %d", got)
	}
	ban := []bindings.LogitBias{{Token: 1, Bias: float32(math.Inf(-1))}}
	if got := sample(bindings.SamplerOptions{LogitBias: ban, NVocab: 4}); got != 2 {
		t.Errorf("greedy with token 1 banned picked %d, want 2", got)
	}
	lift := []bindings.LogitBias{{Token: 3, Bias: 5}}
	if got := sample(bindings.SamplerOptions{Temp: 0.8, TopK: 1, LogitBias: lift, NVocab: 4, Seed: 1}); got != 3 {
		t.Errorf("top-k 1 with token 3 lifted picked %d, want 3", got)
	}
}

// TestSamplerPenalties: llama.cpp's penalties sampler, greedy included:
// once the best token was accepted, a presence penalty larger than its
// lead makes the next best win; without the penalty it wins again.
func TestSamplerPenalties(t *testing.T) {
	lib, _ := loadStories(t)
	logits := []float32{0.1, 3, 2, 0.5}
	for _, c := range []struct {
		presence float32
		want     bindings.Token
	}{{0, 1}, {2, 2}} {
		s := lib.NewSampler(bindings.SamplerOptions{NVocab: 4, PenaltyLastN: 64, PresencePenalty: c.presence})
		s.Accept(1)
		got, err := s.SampleLogits(logits)
		s.Close()
		if err != nil || got != c.want {
			t.Errorf("presence penalty %g after token 1: picked %d (%v), want %d", c.presence, got, err, c.want)
		}
	}
}
