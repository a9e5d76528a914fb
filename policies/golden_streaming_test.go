package policies

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
)

// streamingCase is one case of kind streaming.
type streamingCase struct {
	StartSize   int `json:"start_size"`
	RecentSize  int `json:"recent_size"`
	CacheSize   int `json:"cache_size"`
	TotalTokens int `json:"total_tokens"`
	Ops         []struct {
		Op        string `json:"op"`
		N         *int   `json:"n"`
		NumComing *int   `json:"num_coming"`
		QueryPos  []int  `json:"query_pos"`
		Kept      []int  `json:"kept"`
		CachePos  []int  `json:"cache_pos"`
	} `json:"ops"`
}

// runStreamingCase replays the ops and checks query_pos, kept and cache_pos
// after each, and that the evicted positions are those that left.
func runStreamingCase(t *testing.T, raw json.RawMessage) {
	var c streamingCase
	decodeCase(t, raw, &c)
	s := &Streaming{Start: c.StartSize, Recent: c.RecentSize}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.CacheSize() != c.CacheSize {
		t.Errorf("CacheSize %d, golden %d", s.CacheSize(), c.CacheSize)
	}
	appended := 0
	for i, op := range c.Ops {
		where := fmt.Sprintf("op %d (%s)", i, op.Op)
		before := s.Kept()
		var evicted []int
		switch op.Op {
		case "append":
			if op.N == nil {
				t.Fatalf("%s: no n", where)
			}
			checkSelection(t, where+" query_pos", s.Append(*op.N), op.QueryPos, nil)
			before = s.Kept()
			appended += *op.N
		case "call":
			evicted = s.Call()
		case "evict_for_space":
			if op.NumComing == nil {
				t.Fatalf("%s: no num_coming", where)
			}
			evicted = s.EvictForSpace(*op.NumComing)
		default:
			t.Fatalf("%s: unknown op", where)
		}
		checkSelection(t, where+" kept", s.Kept(), op.Kept, nil)
		checkSelection(t, where+" cache_pos", s.CachePos(), op.CachePos, nil)
		gone := slices.DeleteFunc(before, func(j int) bool { return slices.Contains(s.Kept(), j) })
		if !slices.Equal(evicted, gone) {
			t.Errorf("%s: evicted %v, but %v left", where, evicted, gone)
		}
		if t.Failed() {
			return
		}
	}
	if appended != c.TotalTokens {
		t.Errorf("%d tokens appended, total_tokens %d", appended, c.TotalTokens)
	}
}
