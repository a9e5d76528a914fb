package bindings

// release050 is llama.cpp 0.5.0, as node-llama-cpp 3.22.0 and 3.22.1 ship
// it.
var release050 = &Release{
	Name:           "0.5.0",
	Version:        "0.5.0",
	GGML:           "0.25.1",
	Layout:         "v0.5.0.txt",
	StateHeader:    true,
	StateOnDevice:  true,
	SeqFileVersion: 3,
	Defaults: func(m ModelParams, c ContextParams, s SamplerChainParams) []DefaultCheck {
		return append(baseDefaults(m, c, s),
			DefaultCheck{"model load_mode", m.LoadMode, int32(-1)},
			DefaultCheck{"model lazy_mode", m.LazyMode, int32(1)},
			DefaultCheck{"context n_outputs_max_per_seq", c.NOutputsMaxPerSeq, uint32(1)},
		)
	},
}
