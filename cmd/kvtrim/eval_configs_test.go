package main

import (
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
)

// TestParseConfigs: a policy list's decode policies, aggregations,
// poolings and chunked prefills land in each configuration, and malformed
// items are refused with the item named.
func TestParseConfigs(t *testing.T) {
	cfgs, err := parseConfigs("none,snapkv+h2o,snapkv:quota:maxpool,snapkv@512/knorm,snapkv@-1", kvtrim.DefaultCompression())
	if err != nil {
		t.Fatal(err)
	}
	want := []kvtrim.Compression{
		{Policy: "none"},
		{Policy: "snapkv", DecodePolicy: "h2o"},
		{Policy: "snapkv", Aggregate: "quota", Pool: "max"},
		{Policy: "snapkv", Chunk: 512, ChunkPolicy: "knorm"},
		{Policy: "snapkv", Chunk: -1},
	}
	for i, c := range cfgs {
		w, got := want[i], c.comp
		if got.Policy != w.Policy || got.DecodePolicy != w.DecodePolicy || got.Chunk != w.Chunk ||
			(w.Aggregate != "" && got.Aggregate != w.Aggregate) || (w.Pool != "" && got.Pool != w.Pool) ||
			(w.ChunkPolicy != "" && got.ChunkPolicy != w.ChunkPolicy) {
			t.Errorf("%s: %+v, want %+v", c.name, got, w)
		}
	}
	for list, msg := range map[string]string{
		"snapkv@big":      "the chunk after @",
		"snapkv@512/nope": "chunk policy \"nope\"",
		"snapkv:max:avg":  "avgpool or maxpool",
	} {
		if _, err := parseConfigs(list, kvtrim.DefaultCompression()); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%s: %v, want an error mentioning %q", list, err, msg)
		}
	}
}
