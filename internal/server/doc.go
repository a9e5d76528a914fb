// Package server is kvtrim's llama-server-compatible HTTP server: the
// endpoints, their request parsing and validation, the JSON shapes
// llama-server and OpenAI clients expect, and the slots that generate.
//
// Each of the -np slots owns one kvtrim.Session, its own llama.cpp context
// of ctx-size/np cells, made when the server starts. Requests wait in a
// bounded queue in front of the slots (503 past it); a free slot takes the
// next one, resets its session (or makes a new one when the request asks
// for another compression), prefills the prompt
// (compressing it as the server or the request's "kvtrim" object says) and
// generates with a sampler built from the request. Slots decode on their
// own goroutines in their own contexts; a session is only ever used by its
// slot's goroutine. A client that goes away cancels its request's context,
// which stops the generation at the next token and frees the slot.
//
// SnapKV (and the recent and random baselines) prefill a prompt in a
// temporary context as large as the prompt and move only the kept cells
// into the slot's context; one slot at a time does so, so the server's KV memory is at most the slots' (-c) plus
// one prompt's.
//
// A slot remembers the tokens its cache holds (the last prompt and its
// answer), and a request with the same compression reuses them:
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
// What this first cut does NOT do yet, and the next steps:
//
//   - continuous batching: slots are not batched into one llama_decode;
//     each slot decodes its own sequence in its own context, so N busy
//     slots make N separate decode calls per step;
//   - multiple prompts per request, logprobs, grammars, tools, embeddings,
//     infill, images, slot save/restore and POST /props.
package server
