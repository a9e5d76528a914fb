package bindings

// release040 is llama.cpp 0.4.0, as node-llama-cpp 3.21.1 ships it: the
// first release with llama_version(), laid out as 0.5.0.
var release040 = &Release{
	Name:           "0.4.0",
	Version:        "0.4.0",
	GGML:           "0.23.0",
	Layout:         "v0.4.0.txt",
	StateHeader:    true,
	StateOnDevice:  true,
	SeqFileVersion: 3,
	Defaults:       release050.Defaults,
}
