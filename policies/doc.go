// Package policies decides which token positions of a sequence keep their KV
// cache entries. It is pure Go: it sees attention probabilities and scores as
// float32 slices and knows nothing about llama.cpp.
//
// It holds two registries. Prompt-time policies (registry.go: Policy,
// LookupPrompt) choose once, after the prompt, the positions a budget
// keeps: SnapKV (snapkv.go, snapkv_layer.go), whose last Window prompt
// positions vote with their attention for the earlier ones (the votes
// pooled, heads and layers aggregated into one selection, because a
// llama.cpp cell serves every head and layer); the recent and random
// baselines; Knorm (knorm.go) and KeyDiff (keydiff.go), from keys alone;
// Expected Attention (expected_attention.go), from the recent queries'
// statistics moved to future positions (rope.go).
// Decode-time policies (decode.go: DecodePolicy, Evictor, LookupDecode)
// keep the cache bounded while tokens are decoded: StreamingLLM
// (streaming.go), attention sinks plus a recent window with positions
// shifted; H2O (h2o.go, h2o_mask.go), accumulated attention per cached
// entry, with real eviction and the paper's mask simulation; TOVA
// (tova.go), the positions the current query attends to most.
//
// The kernels (kernels.go, topk.go, f16.go) each have a plain reference
// implementation in the tests that they are checked against; golden_test.go
// checks the policies against the reference vectors described in
// shared/golden/FORMAT.md.
//
// Functions panic on inconsistent slice shapes (a programming error) and
// return errors for bad parameters.
package policies
