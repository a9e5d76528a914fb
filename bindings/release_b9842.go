package bindings

// releaseB9842 is llama.cpp b9842, as node-llama-cpp 3.19.0 ships it. Its
// context parameters have n_rs_seq, n_outputs_max and ctx_type but not
// n_outputs_max_per_seq; its model parameters still have use_mmap.
var releaseB9842 = &Release{
	Name:           "b9842",
	Fingerprint:    "llama_n_rs_seq",
	GGML:           "0.15.3",
	Layout:         "b9842.txt",
	StateHeader:    true,
	SeqFileVersion: 2,
	LegacySamplers: true,
	Defaults:       baseDefaults,
}
