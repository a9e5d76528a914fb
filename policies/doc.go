// Package policies decides which token positions of a sequence keep their KV
// cache entries. It is pure Go: it sees attention probabilities and scores as
// float32 slices and knows nothing about llama.cpp.
//
// It holds three policies and the kernels they share:
//
//   - SnapKV (snapkv.go, snapkv_layer.go): after the prompt, the last Window
//     prompt positions vote with their attention for the earlier positions;
//     the votes are pooled, and the best Budget-Window positions are kept
//     together with the window. The per-head steps follow the paper's code;
//     SnapKV aggregates heads and layers into one selection, because a
//     llama.cpp cell serves every head and layer.
//   - H2O (h2o.go, h2o_mask.go): accumulated attention per cached entry, with
//     real eviction during decoding, and the paper's mask simulation.
//   - StreamingLLM (streaming.go): attention sinks plus a recent window.
//
// The kernels (kernels.go, topk.go, f16.go) each have a plain reference
// implementation in the tests that they are checked against; golden_test.go
// checks the policies against the reference vectors described in
// shared/golden/FORMAT.md.
//
// Functions panic on inconsistent slice shapes (a programming error) and
// return errors for bad parameters.
package policies
