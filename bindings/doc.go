// Package bindings loads the user's own llama.cpp (libggml-base, libggml and
// libllama) at run time with purego and wraps the parts of its C API that
// kvtrim uses: models, vocabularies, contexts, batches, the KV memory,
// samplers, logging and read-only views of graph tensors.
//
// It is the only package of kvtrim that uses unsafe or calls C. Every struct
// passed across the boundary is mirrored in structs.go, and its size and field
// offsets are tested against a table generated from the pinned headers.
//
// What is specific to a llama.cpp release is one Release descriptor
// (release.go; release_050.go is llama.cpp 0.5.0, the only one so far),
// chosen at load by llama_version(). Load refuses a release with no
// descriptor, naming what it found (by its functions when it predates
// llama_version()) and how to get a supported one.
package bindings
