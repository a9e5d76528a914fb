package bindings

// releaseB10361 is llama.cpp b10361, as node-llama-cpp 3.20.0 ships it. Its
// model parameters choose mmap with load_mode (1, LLAMA_LOAD_MODE_MMAP)
// and have no lazy_mode.
var releaseB10361 = &Release{
	Name:           "b10361",
	Fingerprint:    "llama_sampler_copy",
	GGML:           "0.19.0",
	Layout:         "b10361.txt",
	StateHeader:    true,
	SeqFileVersion: 2,
	Defaults: func(m ModelParams, c ContextParams, s SamplerChainParams) []DefaultCheck {
		return append(baseDefaults(m, c, s),
			DefaultCheck{"model load_mode", m.LoadMode, int32(1)},
			DefaultCheck{"context n_outputs_max_per_seq", c.NOutputsMaxPerSeq, uint32(1)},
		)
	},
}
