// Prints the size of every llama.cpp struct kvtrim mirrors, and the offset
// and size of each of their fields, as compiled from the pinned headers.
// native/gen-layout.sh builds and runs it; bindings/layout_test.go reads the
// table it writes and checks the Go mirrors against it.
#include <stddef.h>
#include <stdio.h>
#include "llama.h"
#include "ggml.h"

#define S(T) printf("%s - %zu %zu\n", #T, (size_t)0, sizeof(struct T))
#define F(T, f) printf("%s %s %zu %zu\n", #T, #f, offsetof(struct T, f), sizeof(((struct T *)0)->f))

int main(void) {
    S(llama_model_params);
    F(llama_model_params, devices); F(llama_model_params, tensor_buft_overrides);
    F(llama_model_params, n_gpu_layers); F(llama_model_params, split_mode);
    F(llama_model_params, load_mode); F(llama_model_params, lazy_mode);
    F(llama_model_params, main_gpu); F(llama_model_params, tensor_split);
    F(llama_model_params, progress_callback); F(llama_model_params, progress_callback_user_data);
    F(llama_model_params, kv_overrides); F(llama_model_params, vocab_only);
    F(llama_model_params, check_tensors); F(llama_model_params, use_extra_bufts);
    F(llama_model_params, no_host); F(llama_model_params, no_alloc); F(llama_model_params, load_mtp);

    S(llama_context_params);
    F(llama_context_params, n_ctx); F(llama_context_params, n_batch); F(llama_context_params, n_ubatch);
    F(llama_context_params, n_seq_max); F(llama_context_params, n_rs_seq);
    F(llama_context_params, n_outputs_max); F(llama_context_params, n_outputs_max_per_seq);
    F(llama_context_params, n_threads); F(llama_context_params, n_threads_batch);
    F(llama_context_params, ctx_type); F(llama_context_params, rope_scaling_type);
    F(llama_context_params, pooling_type); F(llama_context_params, attention_type);
    F(llama_context_params, flash_attn_type); F(llama_context_params, rope_freq_base);
    F(llama_context_params, rope_freq_scale); F(llama_context_params, yarn_ext_factor);
    F(llama_context_params, yarn_attn_factor); F(llama_context_params, yarn_beta_fast);
    F(llama_context_params, yarn_beta_slow); F(llama_context_params, yarn_orig_ctx);
    F(llama_context_params, defrag_thold); F(llama_context_params, cb_eval);
    F(llama_context_params, cb_eval_user_data); F(llama_context_params, type_k);
    F(llama_context_params, type_v); F(llama_context_params, abort_callback);
    F(llama_context_params, abort_callback_data); F(llama_context_params, embeddings);
    F(llama_context_params, offload_kqv); F(llama_context_params, no_perf);
    F(llama_context_params, op_offload); F(llama_context_params, swa_full);
    F(llama_context_params, kv_unified); F(llama_context_params, samplers);
    F(llama_context_params, n_samplers); F(llama_context_params, ctx_other);

    S(llama_batch);
    F(llama_batch, n_tokens); F(llama_batch, token); F(llama_batch, embd); F(llama_batch, pos);
    F(llama_batch, n_seq_id); F(llama_batch, seq_id); F(llama_batch, logits);

    S(llama_sampler_chain_params);
    F(llama_sampler_chain_params, no_perf);

    S(llama_token_data);
    F(llama_token_data, id); F(llama_token_data, logit); F(llama_token_data, p);

    S(llama_token_data_array);
    F(llama_token_data_array, data); F(llama_token_data_array, size);
    F(llama_token_data_array, selected); F(llama_token_data_array, sorted);

    S(llama_perf_context_data);
    F(llama_perf_context_data, t_start_ms); F(llama_perf_context_data, t_load_ms);
    F(llama_perf_context_data, t_p_eval_ms); F(llama_perf_context_data, t_eval_ms);
    F(llama_perf_context_data, n_p_eval); F(llama_perf_context_data, n_eval);
    F(llama_perf_context_data, n_reused);

    S(ggml_tensor);
    F(ggml_tensor, type); F(ggml_tensor, buffer); F(ggml_tensor, ne); F(ggml_tensor, nb);
    F(ggml_tensor, op); F(ggml_tensor, op_params); F(ggml_tensor, flags); F(ggml_tensor, src);
    F(ggml_tensor, view_src); F(ggml_tensor, view_offs); F(ggml_tensor, data);
    F(ggml_tensor, name); F(ggml_tensor, extra); F(ggml_tensor, padding);
    return 0;
}
