package gguf

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVocab(t *testing.T) {
	for i, want := range map[int]string{0: "a", 25: "z", 26: "aa", 27: "ab", 701: "zz", 702: "aaa"} {
		if got := letters(i); got != want {
			t.Errorf("letters(%d) = %q, want %q", i, got, want)
		}
	}
	tokens, scores, types := vocab(32000)
	if len(tokens) != 32000 || len(scores) != 32000 || len(types) != 32000 {
		t.Fatalf("%d tokens, %d scores, %d types, want 32000 each", len(tokens), len(scores), len(types))
	}
	seen := map[string]bool{}
	for i, tok := range tokens {
		if tok == "" || seen[tok] {
			t.Fatalf("token %d %q is empty or repeated", i, tok)
		}
		seen[tok] = true
	}
	for id, want := range map[int]string{0: "<unk>", 1: "<s>", 2: "</s>", 3: "<0x00>", 13: "<0x0A>", 258: "<0xFF>", 259: "\u2581", 260: "a", 261: "\u2581a"} {
		if tokens[id] != want {
			t.Errorf("token %d = %q, want %q", id, tokens[id], want)
		}
	}
	for id, want := range map[int]int32{0: 2, 1: 3, 2: 3, 3: 6, 258: 6, 259: 1, 31999: 1} {
		if types[id] != want {
			t.Errorf("token %d has type %d, want %d", id, types[id], want)
		}
	}
	if scores[259] != 0 || scores[260] != -1 || scores[31999] >= scores[300] {
		t.Errorf("scores of normal pieces do not fall: %v %v %v", scores[259], scores[260], scores[31999])
	}
}

// TestPresetSizes checks the presets against the parameter counts of the
// models they imitate, and FileSize against the file actually written.
func TestPresetSizes(t *testing.T) {
	params := func(s Shape) int64 {
		var n int64
		typ, _ := s.weightType()
		for _, ts := range s.tensors(typ) {
			n += ts.Elements()
		}
		return n
	}
	for _, s := range Shapes() {
		if err := s.Validate(); err != nil {
			t.Errorf("preset %s: %v", s.Name, err)
			continue
		}
		size, err := s.FileSize()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%-7s %5s: %d parameters, %d bytes (%.2f GiB)", s.Name, s.Type, params(s), size, float64(size)/(1<<30))
		// The weights are all but the header (under a megabyte) and the
		// F32 norms (a few values per layer).
		typ, _ := s.weightType()
		weights := typ.Bytes(params(s)*32) / 32
		if size < weights || size > weights+weights/100+1<<20 {
			t.Errorf("preset %s: %d bytes for %d parameters of %s (%d bytes)", s.Name, size, params(s), typ, weights)
		}
	}
	s7, err := ShapeByName("7b")
	if err != nil {
		t.Fatal(err)
	}
	if n := params(s7); n != 6738415616 { // llama-2 7B
		t.Errorf("7b has %d parameters, want llama-2 7B's 6738415616", n)
	}
	if _, err := ShapeByName("13b"); err == nil || !strings.Contains(err.Error(), "125m") {
		t.Errorf("ShapeByName(13b): %v", err)
	}

	s, _ := ShapeByName("test")
	for _, typ := range []string{"f32", "f16", "q8_0"} {
		s.Type = typ
		want, err := s.FileSize()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := WriteRandomLlama(&buf, s, 1); err != nil {
			t.Fatal(err)
		}
		if int64(buf.Len()) != want {
			t.Errorf("test %s: wrote %d bytes, FileSize said %d", typ, buf.Len(), want)
		}
	}
}

func TestShapeValidate(t *testing.T) {
	base, _ := ShapeByName("test")
	for _, c := range []struct {
		name string
		edit func(*Shape)
	}{
		{"no layers", func(s *Shape) { s.Layers = 0 }},
		{"vocab too small for the byte tokens", func(s *Shape) { s.Vocab = 256 }},
		{"heads do not divide embd", func(s *Shape) { s.Heads = 5 }},
		{"odd head width", func(s *Shape) { s.Embd, s.Heads, s.KVHeads = 60, 4, 4 }},
		{"kv heads do not divide heads", func(s *Shape) { s.KVHeads = 3 }},
		{"q8_0 ff not whole blocks", func(s *Shape) { s.Type, s.FF = "q8_0", 80 }},
		{"unknown type", func(s *Shape) { s.Type = "q4_k" }},
	} {
		s := base
		c.edit(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: %+v validates", c.name, s)
		}
		if err := WriteRandomLlama(io.Discard, s, 1); err == nil {
			t.Errorf("%s: WriteRandomLlama did not fail", c.name)
		}
	}
	base.Type = ""
	if err := base.Validate(); err != nil {
		t.Errorf("an empty type (f16) is refused: %v", err)
	}
}

// TestDeterministic checks that the bytes depend on the seed only, not on
// the number of goroutines generating them, with tensors of several pieces.
func TestDeterministic(t *testing.T) {
	s := Shape{Name: "multi-chunk", Layers: 1, Embd: 512, Heads: 4, KVHeads: 4, FF: 1024, Vocab: 1100, Ctx: 64, Type: "q8_0"}
	if n := int64(s.Embd * s.Vocab); n <= 2*chunkLen {
		t.Fatalf("token_embd has %d values: not over two pieces of %d", n, chunkLen)
	}
	sum := func(seed uint64, workers int) [32]byte {
		h := sha256.New()
		if err := writeRandomLlama(h, s, seed, workers); err != nil {
			t.Fatal(err)
		}
		return [32]byte(h.Sum(nil))
	}
	a := sum(7, 1)
	if b := sum(7, 3); a != b {
		t.Error("1 and 3 workers wrote different bytes for the same seed")
	}
	if c := sum(8, 2); a == c {
		t.Error("seeds 7 and 8 wrote the same bytes")
	}
}

func TestWriteRandomLlamaFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "models")
	path := filepath.Join(dir, "test.gguf")
	s, _ := ShapeByName("test")
	if err := WriteRandomLlamaFile(path, s, 3); err != nil {
		t.Fatal(err)
	}
	p, err := parseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := s.FileSize(); p.size != want {
		t.Errorf("file is %d bytes, FileSize says %d", p.size, want)
	}
	if len(p.tensors) != 3+9*s.Layers {
		t.Errorf("%d tensors, want %d", len(p.tensors), 3+9*s.Layers)
	}
	for k, want := range map[string]any{
		"general.architecture": "llama", "llama.block_count": uint32(2), "llama.embedding_length": uint32(64),
		"llama.attention.head_count": uint32(4), "llama.attention.head_count_kv": uint32(2),
		"llama.feed_forward_length": uint32(128), "llama.context_length": uint32(512), "llama.rope.dimension_count": uint32(16),
		"tokenizer.ggml.model": "llama", "tokenizer.ggml.bos_token_id": uint32(1), "general.file_type": uint32(0),
	} {
		if p.kv[k] != want {
			t.Errorf("%s = %v (%T), want %v", k, p.kv[k], p.kv[k], want)
		}
	}
	if n := len(p.kv["tokenizer.ggml.tokens"].([]any)); n != s.Vocab {
		t.Errorf("%d tokens, want %d", n, s.Vocab)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("file mode: %v, %v", fi.Mode(), err)
	}

	// A failed write leaves neither the file nor a temporary one.
	bad := s
	bad.Heads = 3
	if err := WriteRandomLlamaFile(filepath.Join(dir, "bad.gguf"), bad, 3); err == nil {
		t.Error("writing an invalid shape did not fail")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "test.gguf" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("folder holds %v, want only test.gguf", names)
	}
}
