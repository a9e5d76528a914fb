package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/kvtrim/kvtrim/internal/gguf"
)

// cmdRandomModel writes a GGUF of a preset shape (llama, or the gemma2 and
// mamba test shapes) with random weights: real speed, meaningless output,
// for benchmarks and tests only.
func cmdRandomModel(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("random-model", "random-model --shape NAME [--type f16|q8_0|f32] -o FILE")
	var names []string
	for _, s := range gguf.Shapes() {
		names = append(names, s.Name)
	}
	shape := fs.String("shape", "125m", "preset shape: "+strings.Join(names, ", "))
	typ := fs.String("type", "", "weight type: f16, q8_0 or f32 (default: the preset's)")
	ctxLen := fs.Int("ctx", 0, "context length in the metadata (default: the preset's)")
	seed := fs.Uint64("seed", 1, "random seed")
	out := fs.StringP("output", "o", "", "GGUF file to write")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *out == "" {
		return usageErrorf("no output: give a file with -o")
	}
	s, err := gguf.ShapeByName(*shape)
	if err != nil {
		return usageError{err}
	}
	if *typ != "" {
		s.Type = *typ
	}
	if *ctxLen > 0 {
		s.Ctx = *ctxLen
	}
	if err := s.Validate(); err != nil {
		return usageError{err}
	}
	size, err := s.FileSize()
	if err != nil {
		return err
	}
	if err := gguf.WriteRandomLlamaFile(*out, s, *seed); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %s shape, %s, %d layers, %d heads of %d, %d KV heads, %s, %d bytes\n",
		*out, s.Name, cmp.Or(s.Arch, gguf.ArchLlama), s.Layers, s.Heads, s.HeadDim(), s.KVHeads, s.Type, size)
	return nil
}
