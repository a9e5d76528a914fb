package bindings

// release050 is llama.cpp 0.5.0, as node-llama-cpp 3.22.0 and 3.22.1 ship
// it (ggml 0.25.1).
var release050 = &Release{
	Version: "0.5.0",
	Layout:  "layout-v0.5.0.txt",
	Defaults: func(m ModelParams, c ContextParams, s SamplerChainParams) []DefaultCheck {
		return []DefaultCheck{
			{"model n_gpu_layers", m.NGPULayers, int32(-1)},
			{"model split_mode", m.SplitMode, int32(1)},
			{"model load_mode", m.LoadMode, int32(-1)},
			{"model lazy_mode", m.LazyMode, int32(1)},
			{"model use_extra_bufts", m.UseExtraBufts, true},
			{"model vocab_only", m.VocabOnly, false},
			{"context n_ctx", c.NCtx, uint32(512)},
			{"context n_batch", c.NBatch, uint32(2048)},
			{"context n_ubatch", c.NUbatch, uint32(512)},
			{"context n_seq_max", c.NSeqMax, uint32(1)},
			{"context flash_attn_type", c.FlashAttnType, FlashAttnAuto},
			{"context type_k", c.TypeK, int32(1)},
			{"context type_v", c.TypeV, int32(1)},
			{"context offload_kqv", c.OffloadKQV, true},
			{"context yarn_attn_factor", c.YarnAttnFactor, float32(-1)},
			{"context cb_eval", c.CbEval, uintptr(0)},
			{"context ctx_other", c.CtxOther, uintptr(0)},
			{"sampler no_perf", s.NoPerf, true},
		}
	},
}
