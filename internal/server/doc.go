// Package server is kvtrim's llama-server-compatible HTTP server: the
// endpoints, their request parsing and validation, the JSON shapes
// llama-server and OpenAI clients expect, and the slots that generate.
//
// The -np slots are the sequences of one llama.cpp context (a
// kvtrim.Group), each with ctx-size/np cells in a KV stream of its own, so
// that compacting one slot's cache shrinks what that slot's attention
// scans. (A single slot, -np 1, has a context of its own instead and
// decodes on its own thread.) Each slot owns a kvtrim.Session, a member of the group. Requests
// wait in a queue in front of the slots (unbounded by default, as
// llama-server's; past a --queue bound, 503 with Retry-After) until the
// pool hands each to a free slot (which one: below). A queued request
// holds its prompt's tokens, never more than its limit: a prompt far
// over it is refused from a prefix before it is tokenized whole. The slot resets its
// session, or reuses what it holds, or makes a new member when the request
// asks for another compression; it prefills the prompt (compressing it as
// the server or the request's "kvtrim" object says) and generates with a
// sampler built from the request. Slots run on their own
// goroutines, and a session is only ever used by its slot's goroutine, but
// their decodes are batched: the group's decoder packs every slot's pending
// prompt chunk or generated token into one llama_decode per step
// (continuous batching), and each slot samples from its own copy of its
// logits. A client that goes away cancels its request's context, which
// stops the generation at the next token and frees the slot; so does one
// that stops reading: every write of an answer must be done within the
// write timeout (--timeout), and the handler gives up its request when
// one is not. A slot hands its request's end to the handler without
// waiting for it, so a slow reader never holds a slot past its request.
//
// H2O reads every decoded token's attention through an eval callback on
// the decoding context, so a slot whose request asks for H2O (as the
// policy or the decode policy) decodes in a context of its own, of the
// slot's size, beside the group: it is not batched, and its memory comes
// on top of -c.
//
// A server whose default compression is a prompt policy (--policy snapkv,
// say) makes the slots' shared context with an eval callback, and a slot
// prefills a compressed prompt in its own stream there, in chunks when it
// does not fit, beside the other slots' decodes (kvtrim.Group): a request
// never holds more than its slot's cells. Otherwise (a full-cache default,
// whose decodes then pay nothing for a callback, or a budget and chunk
// that do not fit the slot) SnapKV and the other prompt policies prefill
// in a temporary context (budget + chunk cells, or the prompt's) and move
// only the kept cells into the slot's stream; one slot at a time does so,
// so the server's KV memory is at most the slots' (-c) plus one such
// context.
//
// A slot remembers the tokens its cache holds (the last prompt and its
// answer). A request goes to the slot it names with id_slot; else to the
// free slot whose cache holds the longest prefix of its prompt, when that
// is more than half the prompt (llama-server's slot similarity), so that a
// conversation's next turn finds its earlier turns; else to the least
// recently used free slot. A request with the same compression as the
// slot's cache reuses it:
//
//   - With the full cache, the longest prefix the new prompt shares with
//     them is kept (positions after it are removed) and only the rest is
//     decoded; timings.cache_n says how many tokens were reused. At least
//     the last prompt token is decoded, for its logits.
//   - With a compressed cache (snapkv, recent, random) the cache holds only
//     some of those positions, chosen for the whole sequence, so it is
//     reused only when the new prompt continues the whole cached sequence
//     (a multi-turn chat's next turn): the new tokens are then decoded
//     after it, uncompressed. Any other prompt starts over and is
//     compressed as a whole.
//   - H2O and StreamingLLM evict while decoding; their requests start over.
//
// Token probabilities (n_probs, or logprobs and top_logprobs) are computed
// as llama-server's default computes them: the log-softmax of the raw
// logits, before sampling; with post_sampling_probs, the sampler chain's
// own probabilities (bindings.Sampler.Candidates).
//
// What it does NOT do yet: Jinja templates, tools, JSON schemas, the
// adaptive-p sampler, embeddings, infill, images and router mode. A request field for one of them is
// refused with a 400 unless it is at its neutral value (unbuilt.go).
package server
