package bindings

// releaseB10068 is llama.cpp b10068, as node-llama-cpp 3.19.1 ships it,
// laid out as b9842.
var releaseB10068 = &Release{
	Name:           "b10068",
	Fingerprint:    "llama_model_ftype",
	GGML:           "0.17.0",
	Layout:         "b10068.txt",
	StateHeader:    true,
	SeqFileVersion: 2,
	LegacySamplers: true,
	Defaults:       baseDefaults,
}
