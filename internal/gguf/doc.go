// Package gguf writes GGUF v3 files, the model format llama.cpp loads, and
// generates models with random weights in them: llama-architecture ones,
// and tiny gemma2 (sliding-window attention) and mamba (recurrent) ones
// for testing what kvtrim refuses.
//
// kvtrim's benchmarks need models whose shapes, and so whose speed and KV
// cache sizes, are those of real models, without shipping real weights.
// WriteRandomLlama streams such a model tensor by tensor, so even a
// 7B-shape file (about 13 GB in F16) is written without holding it in
// memory. The lower-level Writer writes any GGUF: metadata key-value pairs,
// tensor infos, alignment padding and tensor data in F32, F16 or Q8_0.
package gguf
