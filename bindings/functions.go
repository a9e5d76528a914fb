package bindings

import (
	"reflect"
	"strings"
	"unsafe"
)

// functions holds every C function kvtrim calls. Each field's tag names the
// symbol and the library that exports it; bindAll resolves them all.
type functions struct {
	// libggml-base
	ggmlTypeName            func(typ int32) string                                   `sym:"base:ggml_type_name"`
	ggmlOpName              func(op int32) string                                    `sym:"base:ggml_op_name"`
	ggmlBackendTensorGet    func(t uintptr, dst unsafe.Pointer, offset, size uint64) `sym:"base:ggml_backend_tensor_get"`
	ggmlBackendBufferIsHost func(buf uintptr) bool                                   `sym:"base:ggml_backend_buffer_is_host"`
	ggmlBackendDevCount     func() uint64                                            `sym:"ggml:ggml_backend_dev_count"`
	ggmlBackendDevGet       func(i uint64) uintptr                                   `sym:"ggml:ggml_backend_dev_get"`
	ggmlBackendDevName      func(dev uintptr) string                                 `sym:"base:ggml_backend_dev_name"`
	ggmlBackendDevDesc      func(dev uintptr) string                                 `sym:"base:ggml_backend_dev_description"`
	// libggml
	ggmlBackendLoadAllFromPath func(dir string)                       `sym:"ggml:ggml_backend_load_all_from_path"`
	ggmlBackendLoadAll         func()                                 `sym:"ggml:ggml_backend_load_all"`
	ggmlBackendRegCount        func() uint64                          `sym:"ggml:ggml_backend_reg_count"`
	ggmlBackendRegGet          func(i uint64) uintptr                 `sym:"ggml:ggml_backend_reg_get"`
	ggmlBackendRegName         func(reg uintptr) string               `sym:"base:ggml_backend_reg_name"`
	ggmlBackendRegByName       func(name string) uintptr              `sym:"ggml:ggml_backend_reg_by_name"`
	ggmlBackendRegister        func(reg uintptr)                      `sym:"ggml:ggml_backend_register"`
	ggmlBackendRegProcAddress  func(reg uintptr, name string) uintptr `sym:"base:ggml_backend_reg_get_proc_address"`

	// libllama: set-up
	llamaBackendInit               func()                    `sym:"llama:llama_backend_init"`
	llamaLogSet                    func(cb, user uintptr)    `sym:"llama:llama_log_set"`
	llamaSamplerChainDefaultParams func() SamplerChainParams `sym:"llama:llama_sampler_chain_default_params"`
	llamaPrintSystemInfo           func() string             `sym:"llama:llama_print_system_info"`
	llamaSupportsGPUOffload        func() bool               `sym:"llama:llama_supports_gpu_offload"`

	// model
	llamaModelFree         func(m uintptr)                                                                             `sym:"llama:llama_model_free"`
	llamaModelGetVocab     func(m uintptr) uintptr                                                                     `sym:"llama:llama_model_get_vocab"`
	llamaModelNCtxTrain    func(m uintptr) int32                                                                       `sym:"llama:llama_model_n_ctx_train"`
	llamaModelNEmbd        func(m uintptr) int32                                                                       `sym:"llama:llama_model_n_embd"`
	llamaModelNLayer       func(m uintptr) int32                                                                       `sym:"llama:llama_model_n_layer"`
	llamaModelNHead        func(m uintptr) int32                                                                       `sym:"llama:llama_model_n_head"`
	llamaModelNSWA         func(m uintptr) int32                                                                       `sym:"llama:llama_model_n_swa"`
	llamaModelRopeType     func(m uintptr) int32                                                                       `sym:"llama:llama_model_rope_type"`
	llamaModelRopeScale    func(m uintptr) float32                                                                     `sym:"llama:llama_model_rope_freq_scale_train"`
	llamaModelIsRecurrent  func(m uintptr) bool                                                                        `sym:"llama:llama_model_is_recurrent"`
	llamaModelIsHybrid     func(m uintptr) bool                                                                        `sym:"llama:llama_model_is_hybrid"`
	llamaModelNHeadKV      func(m uintptr) int32                                                                       `sym:"llama:llama_model_n_head_kv"`
	llamaModelChatTemplate func(m uintptr, name *byte) *byte                                                           `sym:"llama:llama_model_chat_template"`
	llamaModelMetaValStr   func(m uintptr, key *byte, buf *byte, size uint64) int32                                    `sym:"llama:llama_model_meta_val_str"`
	llamaModelDesc         func(m uintptr, buf *byte, size uint64) int32                                               `sym:"llama:llama_model_desc"`
	llamaModelSize         func(m uintptr) uint64                                                                      `sym:"llama:llama_model_size"`
	llamaModelNParams      func(m uintptr) uint64                                                                      `sym:"llama:llama_model_n_params"`
	llamaChatApplyTemplate func(tmpl *byte, msgs unsafe.Pointer, n uint64, addAss bool, buf *byte, length int32) int32 `sym:"llama:llama_chat_apply_template"`

	// vocab
	llamaVocabNTokens   func(v uintptr) int32                                                                                      `sym:"llama:llama_vocab_n_tokens"`
	llamaVocabBOS       func(v uintptr) Token                                                                                      `sym:"llama:llama_vocab_bos"`
	llamaVocabEOS       func(v uintptr) Token                                                                                      `sym:"llama:llama_vocab_eos"`
	llamaVocabFIMPre    func(v uintptr) Token                                                                                      `sym:"llama:llama_vocab_fim_pre"`
	llamaVocabFIMSuf    func(v uintptr) Token                                                                                      `sym:"llama:llama_vocab_fim_suf"`
	llamaVocabFIMMid    func(v uintptr) Token                                                                                      `sym:"llama:llama_vocab_fim_mid"`
	llamaVocabIsEOG     func(v uintptr, t Token) bool                                                                              `sym:"llama:llama_vocab_is_eog"`
	llamaVocabGetAddBOS func(v uintptr) bool                                                                                       `sym:"llama:llama_vocab_get_add_bos"`
	llamaTokenize       func(v uintptr, text *byte, textLen int32, tokens *Token, nMax int32, addSpecial, parseSpecial bool) int32 `sym:"llama:llama_tokenize"`
	llamaTokenToPiece   func(v uintptr, t Token, buf *byte, length, lstrip int32, special bool) int32                              `sym:"llama:llama_token_to_piece"`
	llamaDetokenize     func(v uintptr, tokens *Token, n int32, text *byte, max int32, removeSpecial, unparseSpecial bool) int32   `sym:"llama:llama_detokenize"`

	// context
	llamaFree             func(c uintptr)                   `sym:"llama:llama_free"`
	llamaNCtx             func(c uintptr) uint32            `sym:"llama:llama_n_ctx"`
	llamaNBatch           func(c uintptr) uint32            `sym:"llama:llama_n_batch"`
	llamaNUbatch          func(c uintptr) uint32            `sym:"llama:llama_n_ubatch"`
	llamaNSeqMax          func(c uintptr) uint32            `sym:"llama:llama_n_seq_max"`
	llamaGetMemory        func(c uintptr) uintptr           `sym:"llama:llama_get_memory"`
	llamaGetModel         func(c uintptr) uintptr           `sym:"llama:llama_get_model"`
	llamaDecode           func(c uintptr, b cBatch) int32   `sym:"llama:llama_decode"`
	llamaGetLogitsIth     func(c uintptr, i int32) *float32 `sym:"llama:llama_get_logits_ith"`
	llamaSetNThreads      func(c uintptr, n, nBatch int32)  `sym:"llama:llama_set_n_threads"`
	llamaNThreads         func(c uintptr) int32             `sym:"llama:llama_n_threads"`
	llamaNThreadsBatch    func(c uintptr) int32             `sym:"llama:llama_n_threads_batch"`
	llamaPerfContext      func(c uintptr) PerfContext       `sym:"llama:llama_perf_context"`
	llamaPerfContextReset func(c uintptr)                   `sym:"llama:llama_perf_context_reset"`

	// batch
	llamaBatchInit func(nTokens, embd, nSeqMax int32) cBatch `sym:"llama:llama_batch_init"`
	llamaBatchFree func(b cBatch)                            `sym:"llama:llama_batch_free"`

	// memory
	llamaMemoryClear     func(mem uintptr, data bool)                    `sym:"llama:llama_memory_clear"`
	llamaMemorySeqRm     func(mem uintptr, seq SeqID, p0, p1 Pos) bool   `sym:"llama:llama_memory_seq_rm"`
	llamaMemorySeqAdd    func(mem uintptr, seq SeqID, p0, p1, delta Pos) `sym:"llama:llama_memory_seq_add"`
	llamaMemorySeqPosMin func(mem uintptr, seq SeqID) Pos                `sym:"llama:llama_memory_seq_pos_min"`
	llamaMemorySeqPosMax func(mem uintptr, seq SeqID) Pos                `sym:"llama:llama_memory_seq_pos_max"`
	llamaMemoryCanShift  func(mem uintptr) bool                          `sym:"llama:llama_memory_can_shift"`

	// state
	llamaStateSeqGetSize    func(c uintptr, seq SeqID) uint64                                       `sym:"llama:llama_state_seq_get_size"`
	llamaStateSeqGetData    func(c uintptr, dst *byte, size uint64, seq SeqID) uint64               `sym:"llama:llama_state_seq_get_data"`
	llamaStateSeqSetData    func(c uintptr, src *byte, size uint64, seq SeqID) uint64               `sym:"llama:llama_state_seq_set_data"`
	llamaStateSeqGetSizeExt func(c uintptr, seq SeqID, flags uint32) uint64                         `sym:"llama:llama_state_seq_get_size_ext"`
	llamaStateSeqSaveFile   func(c uintptr, path *byte, seq SeqID, tokens *Token, n uint64) uint64  `sym:"llama:llama_state_seq_save_file"`
	llamaStateSeqGetDataExt func(c uintptr, dst *byte, size uint64, seq SeqID, flags uint32) uint64 `sym:"llama:llama_state_seq_get_data_ext"`
	llamaStateSeqSetDataExt func(c uintptr, src *byte, size uint64, seq SeqID, flags uint32) uint64 `sym:"llama:llama_state_seq_set_data_ext"`

	// sampling
	llamaSamplerChainInit       func(p SamplerChainParams) uintptr                                                                                                 `sym:"llama:llama_sampler_chain_init"`
	llamaSamplerChainAdd        func(chain, s uintptr)                                                                                                             `sym:"llama:llama_sampler_chain_add"`
	llamaSamplerInitGreedy      func() uintptr                                                                                                                     `sym:"llama:llama_sampler_init_greedy"`
	llamaSamplerInitDist        func(seed uint32) uintptr                                                                                                          `sym:"llama:llama_sampler_init_dist"`
	llamaSamplerInitTopK        func(k int32) uintptr                                                                                                              `sym:"llama:llama_sampler_init_top_k"`
	llamaSamplerInitTopP        func(p float32, minKeep uint64) uintptr                                                                                            `sym:"llama:llama_sampler_init_top_p"`
	llamaSamplerInitMinP        func(p float32, minKeep uint64) uintptr                                                                                            `sym:"llama:llama_sampler_init_min_p"`
	llamaSamplerInitLogitBias   func(nVocab, n int32, biases *LogitBias) uintptr                                                                                   `sym:"llama:llama_sampler_init_logit_bias"`
	llamaSamplerInitPenalties   func(nVocab, lastN int32, repeat, freq, present float32) uintptr                                                                   `sym:"llama:llama_sampler_init_penalties"`
	llamaSamplerInitTemp        func(t float32) uintptr                                                                                                            `sym:"llama:llama_sampler_init_temp"`
	llamaSamplerInitGrammar     func(vocab uintptr, grammar, root *byte) uintptr                                                                                   `sym:"llama:llama_sampler_init_grammar"`
	llamaSamplerInitGrammarLazy func(vocab uintptr, grammar, root *byte, patterns unsafe.Pointer, nPatterns uint64, tokens unsafe.Pointer, nTokens uint64) uintptr `sym:"llama:llama_sampler_init_grammar_lazy_patterns"`
	llamaSamplerInitTopNSigma   func(n float32) uintptr                                                                                                            `sym:"llama:llama_sampler_init_top_n_sigma"`
	llamaSamplerInitTypical     func(p float32, minKeep uint64) uintptr                                                                                            `sym:"llama:llama_sampler_init_typical"`
	llamaSamplerInitXTC         func(p, t float32, minKeep uint64, seed uint32) uintptr                                                                            `sym:"llama:llama_sampler_init_xtc"`
	llamaSamplerInitTempExt     func(t, delta, exponent float32) uintptr                                                                                           `sym:"llama:llama_sampler_init_temp_ext"`
	llamaSamplerInitMirostat    func(nVocab int32, seed uint32, tau, eta float32, m int32) uintptr                                                                 `sym:"llama:llama_sampler_init_mirostat"`
	llamaSamplerInitMirostatV2  func(seed uint32, tau, eta float32) uintptr                                                                                        `sym:"llama:llama_sampler_init_mirostat_v2"`
	llamaSamplerInitDRY         func(vocab uintptr, multiplier, base float32, allowed, lastN int32, breakers unsafe.Pointer, n uint64) uintptr                     `sym:"llama:llama_sampler_init_dry"`
	// The same two functions as b8390 to b10068 declare them (Release.LegacySamplers).
	llamaSamplerInitPenaltiesLegacy func(lastN int32, repeat, freq, present float32) uintptr                                                                        `sym:"llama:llama_sampler_init_penalties"`
	llamaSamplerInitDRYLegacy       func(vocab uintptr, nCtxTrain int32, multiplier, base float32, allowed, lastN int32, breakers unsafe.Pointer, n uint64) uintptr `sym:"llama:llama_sampler_init_dry"`
	llamaSamplerSample              func(s, ctx uintptr, idx int32) Token                                                                                           `sym:"llama:llama_sampler_sample"`
	llamaSamplerAccept              func(s uintptr, t Token)                                                                                                        `sym:"llama:llama_sampler_accept"`
	llamaSamplerApply               func(s uintptr, cur unsafe.Pointer)                                                                                             `sym:"llama:llama_sampler_apply"`
	llamaSamplerReset               func(s uintptr)                                                                                                                 `sym:"llama:llama_sampler_reset"`
	llamaSamplerFree                func(s uintptr)                                                                                                                 `sym:"llama:llama_sampler_free"`
}

// bindAll resolves every field of f from its library and returns the names
// of the symbols it could not find.
func (f *functions) bindAll(llama, ggml, ggmlBase uintptr) (missing []string) {
	handles := map[string]uintptr{"llama": llama, "ggml": ggml, "base": ggmlBase}
	v := reflect.ValueOf(f).Elem()
	t := v.Type()
	for i := range t.NumField() {
		lib, name, _ := strings.Cut(t.Field(i).Tag.Get("sym"), ":")
		// Unexported fields are set through their address.
		ptr := reflect.NewAt(t.Field(i).Type, unsafe.Pointer(v.Field(i).UnsafeAddr())).Interface()
		if err := bind(ptr, handles[lib], name); err != nil {
			missing = append(missing, name)
		}
	}
	return missing
}
