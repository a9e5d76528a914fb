package bindings

import "unsafe"

// The structs below are of two kinds. ModelParams and ContextParams, whose
// layout changes from release to release, are kvtrim's own form of
// llama.cpp's parameter structs, each field tagged with its C name; a
// release's layout table (layouts/) says where those fields lie, and
// params.go moves them in and out of the C bytes. The others mirror the C
// structs field for field, with explicit padding, and are used as they lie
// in memory: every supported release must lay them out alike, which the
// library checks against the release's table at load (layout.go).

// Token is a llama_token: an index into the model's vocabulary.
type Token = int32

// Pos is a llama_pos: a token's position in its sequence.
type Pos = int32

// SeqID is a llama_seq_id: a sequence (conversation) inside a context.
type SeqID = int32

// FlashAttn is llama_flash_attn_type.
type FlashAttn int32

// Flash attention settings, as llama.cpp numbers them.
const (
	FlashAttnAuto     FlashAttn = -1
	FlashAttnDisabled FlashAttn = 0
	FlashAttnEnabled  FlashAttn = 1
)

// ModelParams is struct llama_model_params: the fields of 0.5.0's, of
// which an older release may lack some (params.go).
type ModelParams struct {
	Devices                  uintptr `c:"devices"`               // ggml_backend_dev_t *
	TensorBuftOverrides      uintptr `c:"tensor_buft_overrides"` // const struct llama_model_tensor_buft_override *
	NGPULayers               int32   `c:"n_gpu_layers"`
	SplitMode                int32   `c:"split_mode"`
	LoadMode                 int32   `c:"load_mode"`
	LazyMode                 int32   `c:"lazy_mode"`
	MainGPU                  int32   `c:"main_gpu"`
	TensorSplit              uintptr `c:"tensor_split"`      // const float *
	ProgressCallback         uintptr `c:"progress_callback"` // llama_progress_callback
	ProgressCallbackUserData uintptr `c:"progress_callback_user_data"`
	KVOverrides              uintptr `c:"kv_overrides"` // const struct llama_model_kv_override *
	VocabOnly                bool    `c:"vocab_only"`
	CheckTensors             bool    `c:"check_tensors"`
	UseExtraBufts            bool    `c:"use_extra_bufts"`
	NoHost                   bool    `c:"no_host"`
	NoAlloc                  bool    `c:"no_alloc"`
	LoadMTP                  bool    `c:"load_mtp"`
}

// ContextParams is struct llama_context_params: the fields of 0.5.0's, of
// which an older release may lack some (params.go).
type ContextParams struct {
	NCtx              uint32    `c:"n_ctx"`
	NBatch            uint32    `c:"n_batch"`
	NUbatch           uint32    `c:"n_ubatch"`
	NSeqMax           uint32    `c:"n_seq_max"`
	NRsSeq            uint32    `c:"n_rs_seq"`
	NOutputsMax       uint32    `c:"n_outputs_max"`
	NOutputsMaxPerSeq uint32    `c:"n_outputs_max_per_seq"`
	NThreads          int32     `c:"n_threads"`
	NThreadsBatch     int32     `c:"n_threads_batch"`
	CtxType           int32     `c:"ctx_type"`
	RopeScalingType   int32     `c:"rope_scaling_type"`
	PoolingType       int32     `c:"pooling_type"`
	AttentionType     int32     `c:"attention_type"`
	FlashAttnType     FlashAttn `c:"flash_attn_type"`
	RopeFreqBase      float32   `c:"rope_freq_base"`
	RopeFreqScale     float32   `c:"rope_freq_scale"`
	YarnExtFactor     float32   `c:"yarn_ext_factor"`
	YarnAttnFactor    float32   `c:"yarn_attn_factor"`
	YarnBetaFast      float32   `c:"yarn_beta_fast"`
	YarnBetaSlow      float32   `c:"yarn_beta_slow"`
	YarnOrigCtx       uint32    `c:"yarn_orig_ctx"`
	DefragThold       float32   `c:"defrag_thold"`
	CbEval            uintptr   `c:"cb_eval"` // ggml_backend_sched_eval_callback
	CbEvalUserData    uintptr   `c:"cb_eval_user_data"`
	TypeK             int32     `c:"type_k"` // enum ggml_type
	TypeV             int32     `c:"type_v"`
	AbortCallback     uintptr   `c:"abort_callback"`
	AbortCallbackData uintptr   `c:"abort_callback_data"`
	Embeddings        bool      `c:"embeddings"`
	OffloadKQV        bool      `c:"offload_kqv"`
	NoPerf            bool      `c:"no_perf"`
	OpOffload         bool      `c:"op_offload"`
	SwaFull           bool      `c:"swa_full"`
	KVUnified         bool      `c:"kv_unified"`
	Samplers          uintptr   `c:"samplers"` // struct llama_sampler_seq_config *
	NSamplers         uint64    `c:"n_samplers"`
	CtxOther          uintptr   `c:"ctx_other"` // struct llama_context *
}

// cBatch mirrors struct llama_batch (56 bytes). Its arrays are allocated by
// llama_batch_init in C memory; Batch wraps it with Go slices over them.
type cBatch struct {
	NTokens int32 `c:"n_tokens"`
	_       [4]byte
	Token   *Token   `c:"token"`
	Embd    *float32 `c:"embd"`
	Pos     *Pos     `c:"pos"`
	NSeqID  *int32   `c:"n_seq_id"`
	SeqID   **SeqID  `c:"seq_id"`
	Logits  *int8    `c:"logits"`
}

// SamplerChainParams mirrors struct llama_sampler_chain_params (1 byte).
type SamplerChainParams struct {
	NoPerf bool `c:"no_perf"`
}

// TokenData mirrors struct llama_token_data (12 bytes).
type TokenData struct {
	ID    Token   `c:"id"`
	Logit float32 `c:"logit"`
	P     float32 `c:"p"`
}

// tokenDataArray mirrors struct llama_token_data_array (32 bytes): the
// candidates a sampler chain filters and selects from.
type tokenDataArray struct {
	Data     *TokenData `c:"data"`
	Size     uint64     `c:"size"`
	Selected int64      `c:"selected"`
	Sorted   bool       `c:"sorted"`
	_        [7]byte
}

// PerfContext mirrors struct llama_perf_context_data (48 bytes): llama.cpp's
// own timings of a context, in milliseconds.
type PerfContext struct {
	StartMs float64 `c:"t_start_ms"`
	LoadMs  float64 `c:"t_load_ms"`
	PEvalMs float64 `c:"t_p_eval_ms"` // prompt processing
	EvalMs  float64 `c:"t_eval_ms"`   // single-token decoding
	NPEval  int32   `c:"n_p_eval"`
	NEval   int32   `c:"n_eval"`
	NReused int32   `c:"n_reused"`
	_       [4]byte
}

// ggml limits of the pinned version.
const (
	ggmlMaxDims     = 4
	ggmlMaxSrc      = 10
	ggmlMaxOpParams = 64
	ggmlMaxName     = 64
)

// cTensor mirrors struct ggml_tensor (336 bytes). It is only ever read
// through a pointer that llama.cpp handed us; kvtrim never allocates one.
type cTensor struct {
	Type     int32 `c:"type"`
	_        [4]byte
	Buffer   uintptr                    `c:"buffer"`
	Ne       [ggmlMaxDims]int64         `c:"ne"`
	Nb       [ggmlMaxDims]uint64        `c:"nb"`
	Op       int32                      `c:"op"`
	OpParams [ggmlMaxOpParams / 4]int32 `c:"op_params"`
	Flags    int32                      `c:"flags"`
	Src      [ggmlMaxSrc]*cTensor       `c:"src"`
	ViewSrc  *cTensor                   `c:"view_src"`
	ViewOffs uint64                     `c:"view_offs"`
	Data     unsafe.Pointer             `c:"data"`
	Name     [ggmlMaxName]byte          `c:"name"`
	Extra    uintptr                    `c:"extra"`
	Padding  [8]byte                    `c:"padding"`
}
