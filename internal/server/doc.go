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
// What this first cut does NOT do yet, and the next steps:
//
//   - continuous batching: slots are not batched into one llama_decode;
//     each slot decodes its own sequence in its own context, so N busy
//     slots make N separate decode calls per step;
//   - prompt caching: no prefix is reused across requests (each request
//     prefills its whole prompt into a reset cache);
//   - multiple prompts per request, logprobs, grammars, tools, embeddings,
//     infill, images, slot save/restore and POST /props.
package server
