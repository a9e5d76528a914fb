package server

import (
	"fmt"
	"io"
	"sync"

	"github.com/kvtrim/kvtrim"
)

// metrics are the server's counters since it started, for GET /metrics.
type metrics struct {
	mu sync.Mutex
	v  counters
}

// counters are the values of metrics.
type counters struct {
	requests        int64
	promptTokens    int64 // decoded, as llama-server counts them: cached ones aside
	promptCached    int64 // found in a slot's cache
	tokensMax       int64 // the longest sequence a request made, prompt and answer
	promptMs        float64
	predictedTokens int64
	predictedMs     float64
	cellsKept       int64
	cellsEvicted    int64
	bytesSaved      int64
	bytesPeak       int64
	observeMs       float64
	scoreMs         float64
	evictMs         float64
	compactMs       float64
	// The window since the last scrape, which the throughput gauges
	// average over and a scrape empties, as llama-server's buckets: the
	// prompt's decoded tokens and their time, the generation's decode
	// steps (its first token comes from the prompt's logits) and theirs.
	windowPrompt                   int64
	windowSteps                    int64
	windowPromptMs, windowDecodeMs float64
}

// record adds one finished request.
func (m *metrics) record(r *result) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := r.stats
	c := &m.v
	c.requests++
	c.promptTokens += int64(r.promptN - r.cacheN)
	c.promptCached += int64(r.cacheN)
	c.tokensMax = max(c.tokensMax, int64(r.promptN+r.predictedN))
	c.promptMs += r.promptMs
	c.predictedTokens += int64(r.predictedN)
	c.predictedMs += r.predictedMs
	c.cellsKept += int64(st.KeptCells)
	c.cellsEvicted += int64(st.EvictedCells)
	c.bytesSaved += max(0, st.KVBytesBefore-st.KVBytesAfter)
	c.bytesPeak = max(c.bytesPeak, st.KVBytesPeak)
	c.observeMs += st.ObserveMs
	c.scoreMs += st.ScoreMs
	c.evictMs += st.EvictMs
	c.compactMs += st.CompactMs
	c.windowPrompt += int64(r.promptN - r.cacheN)
	c.windowPromptMs += r.promptMs
	c.windowSteps += int64(max(0, r.predictedN-1))
	c.windowDecodeMs += r.predictedMs
}

// snapshot returns the counters and, when scrape is set, empties the
// throughput window (a scrape reports it once).
func (m *metrics) snapshot(scrape bool) counters {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.v
	if scrape {
		m.v.windowPrompt, m.v.windowSteps, m.v.windowPromptMs, m.v.windowDecodeMs = 0, 0, 0, 0
	}
	return c
}

// write writes the counters in Prometheus' text format, with the gauges
// of the slots and the queue and the slots' batched decodes.
func (m *metrics) write(w io.Writer, processing, deferred int, batches kvtrim.GroupStats) error {
	return writeMetrics(w, m.snapshot(true), processing, deferred, batches)
}

// writeMetrics writes counters c, the gauges and the batches' counts.
func writeMetrics(w io.Writer, c counters, processing, deferred int, batches kvtrim.GroupStats) error {
	type metric struct {
		name, kind, help string
		value            float64
	}
	list := []metric{
		{"llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed, excluding cached tokens.", float64(c.promptTokens)},
		{"llamacpp:prompt_tokens_cached_total", "counter", "Number of prompt tokens reused from the cache.", float64(c.promptCached)},
		{"llamacpp:prompt_seconds_total", "counter", "Prompt process time.", c.promptMs / 1000},
		{"llamacpp:tokens_predicted_total", "counter", "Number of generation tokens processed.", float64(c.predictedTokens)},
		{"llamacpp:tokens_predicted_seconds_total", "counter", "Predict process time.", c.predictedMs / 1000},
		{"llamacpp:n_decode_total", "counter", "Total number of llama_decode() calls of the slots' shared context.", float64(batches.Rounds)},
		{"llamacpp:n_tokens_max", "counter", "Largest observed sequence length (prompt + generation).", float64(c.tokensMax)},
		// kvtrim serve has no speculative decoding: these stay 0.
		{"llamacpp:spec_decode_num_draft_tokens_total", "counter", "Speculative: Total draft tokens generated.", 0},
		{"llamacpp:spec_decode_num_accepted_tokens_total", "counter", "Speculative: Total draft tokens accepted by the target model.", 0},
		{"llamacpp:spec_decode_num_drafts_total", "counter", "Speculative: Total speculative decoding verification steps.", 0},
		{"llamacpp:prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.", perSecond(c.windowPrompt, c.windowPromptMs)},
		{"llamacpp:predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.", perSecond(c.windowSteps, c.windowDecodeMs)},
		{"llamacpp:requests_processing", "gauge", "Number of requests processing.", float64(processing)},
		{"llamacpp:requests_deferred", "gauge", "Number of requests deferred.", float64(deferred)},
		{"llamacpp:n_busy_slots_per_decode", "gauge", "Average number of busy slots per llama_decode() call.", float64(batches.Parts) / max(float64(batches.Rounds), 1)},
		{"kvtrim_requests_total", "counter", "Generation requests finished.", float64(c.requests)},
		{"kvtrim_cells_kept_total", "counter", "KV cells kept after prompt compression.", float64(c.cellsKept)},
		{"kvtrim_cells_evicted_total", "counter", "KV cells evicted by compression.", float64(c.cellsEvicted)},
		{"kvtrim_kv_bytes_saved_total", "counter", "KV cache bytes compression saved (before minus after).", float64(c.bytesSaved)},
		{"kvtrim_kv_bytes_peak", "gauge", "The most KV cache bytes one request's cells took at once on the way (its prefill, chunked or whole, included).", float64(c.bytesPeak)},
		{"kvtrim_observe_seconds_total", "counter", "Time spent turning observed attention into scores' inputs.", c.observeMs / 1000},
		{"kvtrim_score_seconds_total", "counter", "Time spent scoring positions.", c.scoreMs / 1000},
		{"kvtrim_evict_seconds_total", "counter", "Time spent evicting cells.", c.evictMs / 1000},
		{"kvtrim_compact_seconds_total", "counter", "Time spent moving kept cells into the decoding context.", c.compactMs / 1000},
		{"kvtrim_decode_calls_total", "counter", "llama_decode calls of the slots' shared context (continuous batching).", float64(batches.Rounds)},
		{"kvtrim_decode_sequences_total", "counter", "Slots' decode requests those calls carried: divided by the calls, the mean batch.", float64(batches.Parts)},
		{"kvtrim_decode_solo_calls_total", "counter", "Of those calls, the ones a slot had alone, its compression reading their attention (a compressed prompt's end).", float64(batches.SoloRounds)},
		{"kvtrim_decode_tokens_total", "counter", "Tokens those calls decoded.", float64(batches.Tokens)},
		{"kvtrim_decode_seconds_total", "counter", "Time in those calls.", batches.DecodeSeconds},
		{"kvtrim_decode_wait_seconds_total", "counter", "Time the decoder held requests but waited for the slots the last call served, so that their next steps share a call.", batches.WaitSeconds},
	}
	for _, x := range list {
		if _, err := fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %g\n", x.name, x.help, x.name, x.kind, x.name, x.value); err != nil {
			return err
		}
	}
	return nil
}

// perSecond is n tokens over ms milliseconds, per second (0 without time).
func perSecond(n int64, ms float64) float64 {
	if ms <= 0 {
		return 0
	}
	return 1000 * float64(n) / ms
}
