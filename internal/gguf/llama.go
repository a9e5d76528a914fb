package gguf

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Shape is the architecture of a llama model: its sizes and the type of its
// weight matrices.
type Shape struct {
	Name    string // preset name; the model's general.name is derived from it
	Layers  int    // transformer blocks
	Embd    int    // embedding width
	Heads   int    // query heads
	KVHeads int    // key/value heads (fewer than Heads: grouped-query attention)
	FF      int    // feed-forward width
	Vocab   int    // tokens, at least MinVocab
	Ctx     int    // training context length
	// Type is the weight matrices' type: "f16" (also when empty), "q8_0" or
	// "f32". Norm weights are always F32, as in converted models.
	Type string
}

// Hyperparameters every generated model shares: llama-2's.
const (
	ropeFreqBase = 10000
	rmsEps       = 1e-5
	llamaVocab   = 32000
)

// Shapes returns the preset shapes: "125m", "1b-gqa" and "7b" (llama-2's
// vocabulary of 32000 tokens, F16 weights), and "test", a tiny F32 model
// for tests. Each call returns a fresh slice.
func Shapes() []Shape {
	return []Shape{
		{Name: "125m", Layers: 12, Embd: 768, Heads: 12, KVHeads: 12, FF: 3072, Vocab: llamaVocab, Ctx: 4096, Type: "f16"},
		{Name: "1b-gqa", Layers: 16, Embd: 2048, Heads: 32, KVHeads: 8, FF: 5632, Vocab: llamaVocab, Ctx: 4096, Type: "f16"},
		{Name: "7b", Layers: 32, Embd: 4096, Heads: 32, KVHeads: 32, FF: 11008, Vocab: llamaVocab, Ctx: 4096, Type: "f16"},
		// The vocabulary is the smallest with room for some normal pieces
		// after the special and byte tokens.
		{Name: "test", Layers: 2, Embd: 64, Heads: 4, KVHeads: 2, FF: 128, Vocab: 320, Ctx: 512, Type: "f32"},
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

// HeadDim is the width of one attention head.
func (s Shape) HeadDim() int { return s.Embd / s.Heads }

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
	for _, f := range []struct {
		name string
		v    int
	}{{"layers", s.Layers}, {"embd", s.Embd}, {"heads", s.Heads}, {"kv heads", s.KVHeads}, {"ff", s.FF}, {"ctx", s.Ctx}} {
		if f.v < 1 || f.v > 1<<30 {
			return wrap("%s %d is out of range", f.name, f.v)
		}
	}
	if s.Vocab < MinVocab || s.Vocab > 1<<24 {
		return wrap("vocab %d: want %d (special and byte tokens) to %d", s.Vocab, MinVocab, 1<<24)
	}
	if s.Embd%s.Heads != 0 || s.HeadDim()%2 != 0 {
		return wrap("embd %d is not an even head width times %d heads", s.Embd, s.Heads)
	}
	if s.Heads%s.KVHeads != 0 {
		return wrap("%d heads is not a multiple of %d kv heads", s.Heads, s.KVHeads)
	}
	typ, err := s.weightType()
	if err != nil {
		return wrap("%v", err)
	}
	if b := typ.BlockSize(); s.Embd%b != 0 || s.FF%b != 0 {
		return wrap("%s needs embd %d and ff %d to be multiples of %d", typ, s.Embd, s.FF, b)
	}
	return nil
}

// llamaTensor is a tensor of a generated model and how to fill it.
type llamaTensor struct {
	TensorInfo
	ones bool // a norm weight: all ones; otherwise small random values
}

// tensors lists the model's tensors in file order, with llama.cpp's names
// and shapes (ggml's ne: input width first).
func (s Shape) tensors(typ Type) []llamaTensor {
	e, ff, v := int64(s.Embd), int64(s.FF), int64(s.Vocab)
	q, kv := int64(s.Heads*s.HeadDim()), int64(s.KVHeads*s.HeadDim())
	matrix := func(name string, in, out int64) llamaTensor {
		return llamaTensor{TensorInfo: TensorInfo{Name: name, Type: typ, Shape: []int64{in, out}}}
	}
	norm := func(name string) llamaTensor {
		return llamaTensor{TensorInfo: TensorInfo{Name: name, Type: TypeF32, Shape: []int64{e}}, ones: true}
	}
	ts := []llamaTensor{matrix("token_embd.weight", e, v), norm("output_norm.weight"), matrix("output.weight", e, v)}
	for i := range s.Layers {
		p := fmt.Sprintf("blk.%d.", i)
		ts = append(ts,
			norm(p+"attn_norm.weight"),
			matrix(p+"attn_q.weight", e, q),
			matrix(p+"attn_k.weight", e, kv),
			matrix(p+"attn_v.weight", e, kv),
			matrix(p+"attn_output.weight", q, e),
			norm(p+"ffn_norm.weight"),
			matrix(p+"ffn_gate.weight", e, ff),
			matrix(p+"ffn_up.weight", e, ff),
			matrix(p+"ffn_down.weight", ff, e),
		)
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

// declare validates s and adds its metadata and tensors to w.
func (s Shape) declare(w *Writer) ([]llamaTensor, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	typ, _ := s.weightType()
	w.AddString("general.architecture", "llama")
	w.AddString("general.name", "kvtrim random "+s.Name)
	w.AddUint32("general.file_type", fileType(typ))
	w.AddUint32("general.quantization_version", 2)
	w.AddUint32("llama.vocab_size", uint32(s.Vocab))
	w.AddUint32("llama.context_length", uint32(s.Ctx))
	w.AddUint32("llama.embedding_length", uint32(s.Embd))
	w.AddUint32("llama.block_count", uint32(s.Layers))
	w.AddUint32("llama.feed_forward_length", uint32(s.FF))
	w.AddUint32("llama.rope.dimension_count", uint32(s.HeadDim()))
	w.AddFloat32("llama.rope.freq_base", ropeFreqBase)
	w.AddUint32("llama.attention.head_count", uint32(s.Heads))
	w.AddUint32("llama.attention.head_count_kv", uint32(s.KVHeads))
	w.AddFloat32("llama.attention.layer_norm_rms_epsilon", rmsEps)

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

// WriteRandomLlama writes a llama-architecture GGUF of shape s that
// llama.cpp loads and runs: llama-2's hyperparameters, a synthetic
// SentencePiece vocabulary, norm weights of one and other weights drawn
// from a normal distribution of standard deviation 0.02, so activations
// stay finite. The same seed gives the same bytes. The data is generated
// in parallel and streamed: memory use does not grow with the model.
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
