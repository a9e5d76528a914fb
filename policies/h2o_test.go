package policies

import (
	"slices"
	"testing"
)

func TestNewH2OErrors(t *testing.T) {
	for _, c := range [][2]int{{-1, 2}, {2, -1}, {0, 0}} {
		if _, err := NewH2O(c[0], c[1]); err == nil {
			t.Errorf("NewH2O(%d, %d): no error", c[0], c[1])
		}
	}
}

func TestH2OByHand(t *testing.T) {
	p, err := NewH2O(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Three prompt positions, cache of two: position 2 is recent, and of
	// 0 (0.5) and 1 (0.1) the heavier stays.
	if evicted := p.Prefill([]float32{0.5, 0.1, 0.3}); !slices.Equal(evicted, []int{1}) {
		t.Errorf("prefill evicted %v, want [1]", evicted)
	}
	if !slices.Equal(p.Kept(), []int{0, 2}) || !slices.Equal(p.Scores(), []float32{0.5, 0.3}) {
		t.Errorf("after prefill: kept %v scores %v", p.Kept(), p.Scores())
	}
	// Step at 3: scores become 0.7 (pos 0), 0.4 (pos 2), 0.7 (pos 3, its
	// own attention); 3 is recent and 0 beats 2.
	evicted, err := p.Step(3, []float32{0.2, 0.1, 0.7})
	if err != nil || !slices.Equal(evicted, []int{2}) {
		t.Errorf("step evicted %v, %v; want [2]", evicted, err)
	}
	if !slices.Equal(p.Kept(), []int{0, 3}) || !closeTo(float64(p.Scores()[0]), 0.7, 1e-7, 0) || p.Scores()[1] != 0.7 {
		t.Errorf("after step: kept %v scores %v", p.Kept(), p.Scores())
	}
	if _, err := p.Step(4, []float32{1, 1}); err == nil {
		t.Error("step with a row of 2 entries for 2 kept + itself: no error")
	}
	if _, err := p.Step(3, []float32{1, 1, 1}); err == nil {
		t.Error("step at a position already kept: no error")
	}
}

func TestH2OPrefillAt(t *testing.T) {
	p, err := NewH2O(2, 2)
	if err != nil {
		t.Fatal(err)
	}
	// Heavy: the two best of 3, 9, 12 (scores .5 .1 .9); recent: 20, 30.
	evicted, err := p.PrefillAt([]int{3, 9, 12, 20, 30}, []float32{0.5, 0.1, 0.9, 0, 0})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(evicted, []int{9}) || !slices.Equal(p.Kept(), []int{3, 12, 20, 30}) {
		t.Errorf("evicted %v, kept %v", evicted, p.Kept())
	}
	if _, err := p.PrefillAt([]int{5, 4}, []float32{1, 1}); err == nil {
		t.Error("unsorted positions accepted")
	}
	if _, err := p.PrefillAt([]int{5}, nil); err == nil {
		t.Error("mismatched lengths accepted")
	}
}
