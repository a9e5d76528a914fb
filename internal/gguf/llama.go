package gguf

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Shape is the architecture of a model: its kind, its sizes and the type
// of its weight matrices.
type Shape struct {
	Name string // preset name; the model's general.name is derived from it
	// Arch is the architecture, general.architecture: ArchLlama (also when
	// empty), ArchGemma2 (sliding-window attention) or ArchMamba
	// (recurrent). See the constants for what each needs of the sizes.
	Arch    string
	Layers  int // transformer (or Mamba) blocks
	Embd    int // embedding width
	Heads   int // query heads; 0 for Mamba
	KVHeads int // key/value heads (fewer than Heads: grouped-query attention); 0 for Mamba
	FF      int // feed-forward width; 0 for Mamba
	Vocab   int // tokens, at least MinVocab
	Ctx     int // training context length
	// Window is the sliding-window attention size in positions of a gemma2
	// model (its even layers attend to the last Window positions only, its
	// odd ones to all); 0 for the other architectures.
	Window int
	// Type is the weight matrices' type: "f16" (also when empty), "q8_0" or
	// "f32". Norm weights are always F32, as in converted models, and so
	// are Mamba's small per-channel tensors.
	Type string
}

// The architectures WriteRandomLlama writes: Shape.Arch's values.
const (
	// ArchLlama is llama-2's architecture: every layer attends to every
	// position, so the KV cache holds one cell per position.
	ArchLlama = "llama"
	// ArchGemma2 is Gemma 2's: llama-like blocks with norms after the
	// attention and the feed-forward too, GELU feed-forward, logit
	// soft-capping and tied embeddings, and sliding-window attention in
	// every other layer (Shape.Window positions), which llama.cpp reports
	// as llama_model_n_swa.
	ArchGemma2 = "gemma2"
	// ArchMamba is Mamba's: recurrent state-space blocks and no attention,
	// so llama.cpp keeps a fixed-size state per sequence instead of a KV
	// cache (llama_model_is_recurrent). Its inner width is twice Embd (the
	// only expansion llama.cpp supports); Heads, KVHeads and FF must be 0.
	ArchMamba = "mamba"
)

// Hyperparameters every generated model shares: llama-2's.
const (
	ropeFreqBase = 10000
	rmsEps       = 1e-5
	llamaVocab   = 32000
)

// Shapes returns the preset shapes: "125m", "1b-gqa" and "7b" (llama-2's
// vocabulary of 32000 tokens, F16 weights), "test", a tiny F32 llama for
// tests, and two tiny F32 models of the test vocabulary whose memory cannot
// drop single positions: "test-swa" (gemma2, a sliding window of 16) and
// "test-recurrent" (mamba). Each call returns a fresh slice.
func Shapes() []Shape {
	return []Shape{
		{Name: "125m", Layers: 12, Embd: 768, Heads: 12, KVHeads: 12, FF: 3072, Vocab: llamaVocab, Ctx: 4096, Type: "f16"},
		{Name: "1b-gqa", Layers: 16, Embd: 2048, Heads: 32, KVHeads: 8, FF: 5632, Vocab: llamaVocab, Ctx: 4096, Type: "f16"},
		{Name: "7b", Layers: 32, Embd: 4096, Heads: 32, KVHeads: 32, FF: 11008, Vocab: llamaVocab, Ctx: 4096, Type: "f16"},
		// The vocabulary is the smallest with room for some normal pieces
		// after the special and byte tokens.
		{Name: "test", Layers: 2, Embd: 64, Heads: 4, KVHeads: 2, FF: 128, Vocab: 320, Ctx: 512, Type: "f32"},
		{Name: "test-swa", Arch: ArchGemma2, Layers: 2, Embd: 64, Heads: 4, KVHeads: 2, FF: 128, Vocab: 320, Ctx: 512, Window: 16, Type: "f32"},
		{Name: "test-recurrent", Arch: ArchMamba, Layers: 2, Embd: 64, Vocab: 320, Ctx: 512, Type: "f32"},
	}
}

// ShapeByName returns the preset shape called name.
func ShapeByName(name string) (Shape, error) {
	var names []string
	for _, s := range Shapes() {
		if s.Name == name {
			return s, nil
		}
		names = append(names, s.Name)
	}
	return Shape{}, fmt.Errorf("model shape %q: want one of %s", name, strings.Join(names, ", "))
}

// HeadDim is the width of one attention head (0 without attention).
func (s Shape) HeadDim() int {
	if s.Heads == 0 {
		return 0
	}
	return s.Embd / s.Heads
}

// arch is the architecture s names, Arch with its default.
func (s Shape) arch() string {
	if s.Arch == "" {
		return ArchLlama
	}
	return s.Arch
}

// weightType is the Type that s.Type names.
func (s Shape) weightType() (Type, error) {
	if s.Type == "" {
		return TypeF16, nil
	}
	return ParseType(s.Type)
}

// Validate reports a shape llama.cpp could not load or WriteRandomLlama
// could not write.
func (s Shape) Validate() error {
	wrap := func(format string, a ...any) error {
		return fmt.Errorf("model shape %q: %s", s.Name, fmt.Sprintf(format, a...))
	}
	arch := s.arch()
	attention := arch != ArchMamba
	switch arch {
	case ArchLlama, ArchGemma2, ArchMamba:
	default:
		return wrap("architecture %q: want %s, %s or %s", s.Arch, ArchLlama, ArchGemma2, ArchMamba)
	}
	type size struct {
		name string
		v    int
	}
	sizes := []size{{"layers", s.Layers}, {"embd", s.Embd}, {"ctx", s.Ctx}}
	if attention {
		sizes = append(sizes, size{"heads", s.Heads}, size{"kv heads", s.KVHeads}, size{"ff", s.FF})
	} else if s.Heads != 0 || s.KVHeads != 0 || s.FF != 0 {
		return wrap("%s has no attention or feed-forward: heads %d, kv heads %d and ff %d must be 0", arch, s.Heads, s.KVHeads, s.FF)
	}
	if arch == ArchGemma2 {
		sizes = append(sizes, size{"sliding window", s.Window})
	} else if s.Window != 0 {
		return wrap("%s has no sliding window: window %d must be 0", arch, s.Window)
	}
	for _, f := range sizes {
		if f.v < 1 || f.v > 1<<30 {
			return wrap("%s %d is out of range", f.name, f.v)
		}
	}
	if s.Vocab < MinVocab || s.Vocab > 1<<24 {
		return wrap("vocab %d: want %d (special and byte tokens) to %d", s.Vocab, MinVocab, 1<<24)
	}
	if attention {
		if s.Embd%s.Heads != 0 || s.HeadDim()%2 != 0 {
			return wrap("embd %d is not an even head width times %d heads", s.Embd, s.Heads)
		}
		if s.Heads%s.KVHeads != 0 {
			return wrap("%d heads is not a multiple of %d kv heads", s.Heads, s.KVHeads)
		}
	}
	typ, err := s.weightType()
	if err != nil {
		return wrap("%v", err)
	}
	// Every matrix's input width is embd, ff or (Mamba) twice embd; the
	// narrow ones that are not are kept F32.
	if b := typ.BlockSize(); s.Embd%b != 0 || s.FF%b != 0 {
		return wrap("%s needs embd %d and ff %d to be multiples of %d", typ, s.Embd, s.FF, b)
	}
	return nil
}

// llamaTensor is a tensor of a generated model and how to fill it.
type llamaTensor struct {
	TensorInfo
	constant bool    // every value is value; otherwise small random values
	value    float32 // the value of a constant tensor
}

// Mamba's fixed hyperparameters: those of the released models.
const (
	mambaConv  = 4  // width of the causal 1-D convolution
	mambaState = 16 // state size per channel
)

// mambaDTRank is the rank of Mamba's time-step projection for an embedding
// width: a sixteenth of it, rounded up.
func mambaDTRank(embd int) int { return (embd + 15) / 16 }

// tensors lists the model's tensors in file order, with llama.cpp's names
// and shapes (ggml's ne: input width first).
func (s Shape) tensors(typ Type) []llamaTensor {
	e, ff, v := int64(s.Embd), int64(s.FF), int64(s.Vocab)
	q, kv := int64(s.Heads*s.HeadDim()), int64(s.KVHeads*s.HeadDim())
	tensor := func(name string, t Type, shape ...int64) llamaTensor {
		return llamaTensor{TensorInfo: TensorInfo{Name: name, Type: t, Shape: shape}}
	}
	matrix := func(name string, in, out int64) llamaTensor { return tensor(name, typ, in, out) }
	filled := func(name string, value float32, shape ...int64) llamaTensor {
		t := tensor(name, TypeF32, shape...)
		t.constant, t.value = true, value
		return t
	}
	norm := func(name string) llamaTensor { return filled(name, 1, e) }
	// block is a llama transformer block's tensors, prefix p ("blk.N.").
	block := func(p string) []llamaTensor {
		return []llamaTensor{
			norm(p + "attn_norm.weight"),
			matrix(p+"attn_q.weight", e, q),
			matrix(p+"attn_k.weight", e, kv),
			matrix(p+"attn_v.weight", e, kv),
			matrix(p+"attn_output.weight", q, e),
			norm(p + "ffn_norm.weight"),
			matrix(p+"ffn_gate.weight", e, ff),
			matrix(p+"ffn_up.weight", e, ff),
			matrix(p+"ffn_down.weight", ff, e),
		}
	}

	switch s.arch() {
	case ArchGemma2:
		// The output matrix is token_embd's transpose: no output.weight.
		ts := []llamaTensor{matrix("token_embd.weight", e, v), norm("output_norm.weight")}
		for i := range s.Layers {
			p := fmt.Sprintf("blk.%d.", i)
			// llama's block plus a norm after attention and after the FFN.
			ts = append(append(ts, block(p)...), norm(p+"post_attention_norm.weight"), norm(p+"post_ffw_norm.weight"))
		}
		return ts
	case ArchMamba:
		inner, state, rank := 2*e, int64(mambaState), int64(mambaDTRank(s.Embd))
		dtType := typ
		if rank%int64(typ.BlockSize()) != 0 {
			dtType = TypeF32
		}
		// Tied embeddings, as in the released models.
		ts := []llamaTensor{matrix("token_embd.weight", e, v), norm("output_norm.weight")}
		for i := range s.Layers {
			p := fmt.Sprintf("blk.%d.", i)
			ts = append(ts,
				norm(p+"attn_norm.weight"),
				matrix(p+"ssm_in.weight", e, 2*inner),
				tensor(p+"ssm_conv1d.weight", TypeF32, mambaConv, inner),
				tensor(p+"ssm_conv1d.bias", TypeF32, inner),
				matrix(p+"ssm_x.weight", inner, rank+2*state),
				tensor(p+"ssm_dt.weight", dtType, rank, inner),
				tensor(p+"ssm_dt.bias", TypeF32, inner),
				// A is stored negated and exponentiated (-exp(A_log)):
				// -1 makes every channel's state decay.
				filled(p+"ssm_a", -1, state, inner),
				filled(p+"ssm_d", 1, inner),
				matrix(p+"ssm_out.weight", inner, e),
			)
		}
		return ts
	}
	ts := []llamaTensor{matrix("token_embd.weight", e, v), norm("output_norm.weight"), matrix("output.weight", e, v)}
	for i := range s.Layers {
		ts = append(ts, block(fmt.Sprintf("blk.%d.", i))...)
	}
	return ts
}

// fileType is general.file_type for weights of type t (llama_ftype).
func fileType(t Type) uint32 {
	switch t {
	case TypeF16:
		return 1
	case TypeQ8_0:
		return 7
	}
	return 0
}

// Gemma 2's logit soft-caps: attention scores and output logits are
// squashed into (-cap, cap) with cap·tanh(x/cap).
const (
	gemma2AttnSoftcap  = 50
	gemma2FinalSoftcap = 30
)

// declare validates s and adds its metadata and tensors to w.
func (s Shape) declare(w *Writer) ([]llamaTensor, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	typ, _ := s.weightType()
	arch := s.arch()
	key := func(k string) string { return arch + "." + k }
	w.AddString("general.architecture", arch)
	w.AddString("general.name", "kvtrim random "+s.Name)
	w.AddUint32("general.file_type", fileType(typ))
	w.AddUint32("general.quantization_version", 2)
	w.AddUint32(key("vocab_size"), uint32(s.Vocab))
	w.AddUint32(key("context_length"), uint32(s.Ctx))
	w.AddUint32(key("embedding_length"), uint32(s.Embd))
	w.AddUint32(key("block_count"), uint32(s.Layers))
	switch arch {
	case ArchMamba:
		w.AddUint32(key("ssm.conv_kernel"), mambaConv)
		w.AddUint32(key("ssm.inner_size"), uint32(2*s.Embd))
		w.AddUint32(key("ssm.state_size"), mambaState)
		w.AddUint32(key("ssm.time_step_rank"), uint32(mambaDTRank(s.Embd)))
	default:
		w.AddUint32(key("feed_forward_length"), uint32(s.FF))
		w.AddUint32(key("rope.dimension_count"), uint32(s.HeadDim()))
		w.AddFloat32(key("rope.freq_base"), ropeFreqBase)
		w.AddUint32(key("attention.head_count"), uint32(s.Heads))
		w.AddUint32(key("attention.head_count_kv"), uint32(s.KVHeads))
	}
	w.AddFloat32(key("attention.layer_norm_rms_epsilon"), rmsEps)
	if arch == ArchGemma2 {
		w.AddUint32(key("attention.sliding_window"), uint32(s.Window))
		w.AddFloat32(key("attn_logit_softcapping"), gemma2AttnSoftcap)
		w.AddFloat32(key("final_logit_softcapping"), gemma2FinalSoftcap)
	}

	tokens, scores, types := vocab(s.Vocab)
	w.AddString("tokenizer.ggml.model", "llama")
	w.AddStringArray("tokenizer.ggml.tokens", tokens)
	w.AddFloat32Array("tokenizer.ggml.scores", scores)
	w.AddInt32Array("tokenizer.ggml.token_type", types)
	w.AddUint32("tokenizer.ggml.unknown_token_id", unkID)
	w.AddUint32("tokenizer.ggml.bos_token_id", bosID)
	w.AddUint32("tokenizer.ggml.eos_token_id", eosID)
	w.AddBool("tokenizer.ggml.add_bos_token", true)
	w.AddBool("tokenizer.ggml.add_eos_token", false)

	ts := s.tensors(typ)
	for _, t := range ts {
		w.AddTensor(t.Name, t.Type, t.Shape...)
	}
	if err := w.Err(); err != nil {
		return nil, fmt.Errorf("model shape %q: %w", s.Name, err)
	}
	return ts, nil
}

// FileSize is the size of the file WriteRandomLlama writes for s, computed
// without generating it.
func (s Shape) FileSize() (int64, error) {
	w := NewWriter(io.Discard)
	if _, err := s.declare(w); err != nil {
		return 0, err
	}
	return w.Size()
}

// WriteRandomLlama writes a GGUF of shape s that llama.cpp loads and runs:
// of llama-2's architecture and hyperparameters unless s.Arch names
// another (gemma2, mamba), a synthetic SentencePiece vocabulary, norm
// weights of one and other weights drawn from a normal distribution of
// standard deviation 0.02, so activations stay finite. The same seed gives
// the same bytes. The data is generated in parallel and streamed: memory
// use does not grow with the model.
func WriteRandomLlama(w io.Writer, s Shape, seed uint64) error {
	return writeRandomLlama(w, s, seed, 0)
}

// writeRandomLlama is WriteRandomLlama with a number of generating
// goroutines (0: GOMAXPROCS).
func writeRandomLlama(out io.Writer, s Shape, seed uint64, workers int) error {
	w := NewWriter(out)
	ts, err := s.declare(w)
	if err != nil {
		return fmt.Errorf("write random llama: %w", err)
	}
	if err := w.WriteHeader(); err != nil {
		return fmt.Errorf("write random llama %s: %w", s.Name, err)
	}
	if err := writeRandomData(w, ts, seed, workers); err != nil {
		return fmt.Errorf("write random llama %s: %w", s.Name, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("write random llama %s: %w", s.Name, err)
	}
	return nil
}

// WriteRandomLlamaFile writes WriteRandomLlama's model to path atomically:
// to a temporary file in the same folder (created if missing), renamed
// over path only once complete and synced.
func WriteRandomLlamaFile(path string, s Shape, seed uint64) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write model %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write model %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := WriteRandomLlama(f, s, seed); err != nil {
		return fmt.Errorf("write model %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("write model %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write model %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write model %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write model %s: %w", path, err)
	}
	return nil
}
