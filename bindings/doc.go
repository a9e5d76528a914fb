// Package bindings loads the user's own llama.cpp (libggml-base, libggml and
// libllama) at run time with purego and wraps the parts of its C API that
// kvtrim uses: models, vocabularies, contexts, batches, the KV memory,
// samplers, logging and read-only views of graph tensors.
//
// It is the only package of kvtrim that uses unsafe or calls C. Every struct
// passed across the boundary is mirrored in structs.go, and its size and field
// offsets are tested against a table generated from the pinned headers.
//
// kvtrim supports exactly one llama.cpp version at a time (SupportedVersion).
// Load refuses any other, naming what it found and how to get the right one.
package bindings
