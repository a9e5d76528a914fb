// Package hooks connects kvtrim's policies to a running llama.cpp context:
// the cb_eval observer that reads the observation window's attention (from
// kq_soft_max with flash attention off, or from the post-RoPE queries and the
// K cache with it on), the map between cache cells and token positions, and
// eviction by ranges with compaction.
package hooks
