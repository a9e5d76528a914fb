package policies

import (
	"slices"
	"testing"
)

func TestStreamingByHand(t *testing.T) {
	s := &Streaming{Start: 1, Recent: 2}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	expect := func(step string, got, want []int) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", step, got, want)
		}
	}
	expect("append 4 query positions", s.Append(4), []int{0, 1, 2, 3})
	expect("call evicted", s.Call(), []int{1})
	expect("kept after call", s.Kept(), []int{0, 2, 3})
	// Room for 2 more in a cache of 3: keep the sink and slots from
	// 3-2+2 = 3 on, i.e. nothing else.
	expect("evict for 2 evicted", s.EvictForSpace(2), []int{2, 3})
	expect("append 2 query positions", s.Append(2), []int{1, 2})
	expect("kept after append", s.Kept(), []int{0, 4, 5})
	expect("cache positions", s.CachePos(), []int{0, 1, 2})
	expect("call with a full cache", s.Call(), nil)
}

func TestStreamingValidate(t *testing.T) {
	for _, s := range []*Streaming{{Start: -1, Recent: 2}, {Start: 1, Recent: -2}} {
		if err := s.Validate(); err == nil {
			t.Errorf("%+v: no error", *s)
		}
	}
}
