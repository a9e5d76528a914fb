package policies

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// tovaReference is TOVA written out plainly: append the new position,
// then while over budget drop the lowest-scored older one (the earliest
// among equals); the newest always stays.
func tovaReference(kept []int, row []float32, pos, budget int) (next, evicted []int) {
	type entry struct {
		pos   int
		score float32
	}
	var es []entry
	for i, p := range kept {
		es = append(es, entry{p, row[i]})
	}
	es = append(es, entry{pos, row[len(kept)]})
	for len(es) > budget {
		worst := 0
		for i := 1; i < len(es)-1; i++ {
			if es[i].score < es[worst].score {
				worst = i
			}
		}
		evicted = append(evicted, es[worst].pos)
		es = slices.Delete(es, worst, worst+1)
	}
	for _, e := range es {
		next = append(next, e.pos)
	}
	slices.Sort(evicted)
	return next, evicted
}

func TestTOVAStepMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, budget := range []int{1, 2, 5, 16} {
		tv, err := NewTOVA(budget)
		if err != nil {
			t.Fatal(err)
		}
		var kept []int
		for pos := range 200 {
			row := make([]float32, len(kept)+1)
			for i := range row {
				row[i] = float32(r.IntN(8)) // ties on purpose
			}
			wantKept, wantEvicted := tovaReference(kept, row, pos, budget)
			got, err := tv.Step(pos, slices.Clone(row))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, wantEvicted) || !slices.Equal(tv.Kept(), wantKept) {
				t.Fatalf("budget %d, step %d: evicted %v kept %v, want %v and %v", budget, pos, got, tv.Kept(), wantEvicted, wantKept)
			}
			kept = wantKept
		}
		if len(kept) != budget {
			t.Errorf("budget %d: %d kept after 200 steps", budget, len(kept))
		}
	}
}

func TestTOVAStartKeepsLastQuerysBest(t *testing.T) {
	tv, _ := NewTOVA(4)
	positions := []int{0, 2, 3, 5, 8, 9, 12}
	scores := []float32{0.5, 0.1, 0.9, 0.3, 0.05, 0.7, 0} // the last stays whatever it scores
	evicted, err := tv.Start(positions, scores)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 3, 9, 12}; !slices.Equal(tv.Kept(), want) {
		t.Errorf("kept %v, want %v", tv.Kept(), want)
	}
	if want := []int{2, 5, 8}; !slices.Equal(evicted, want) {
		t.Errorf("evicted %v, want %v", evicted, want)
	}
	// Nothing observed: the earliest leave.
	tv, _ = NewTOVA(3)
	if evicted, _ := tv.Start(positions, nil); !slices.Equal(evicted, []int{0, 2, 3, 5}) {
		t.Errorf("unscored start evicted %v", evicted)
	}
	// Within the budget nothing leaves.
	tv, _ = NewTOVA(10)
	if evicted, _ := tv.Start(positions, scores); evicted != nil || len(tv.Kept()) != len(positions) {
		t.Errorf("start within budget evicted %v", evicted)
	}
}

func TestTOVARefusesBadInput(t *testing.T) {
	if _, err := NewTOVA(0); err == nil {
		t.Error("budget 0 accepted")
	}
	tv, _ := NewTOVA(2)
	if _, err := tv.Start([]int{3, 1}, nil); err == nil {
		t.Error("descending positions accepted")
	}
	if _, err := tv.Start([]int{1, 3}, []float32{1}); err == nil {
		t.Error("scores of another length accepted")
	}
	if _, err := tv.Step(3, []float32{1, 1, 1}); err == nil {
		t.Error("a step at a kept position accepted")
	}
	if _, err := tv.Step(4, []float32{1, 1}); err == nil {
		t.Error("a short row accepted")
	}
}

func TestTOVAInRegistry(t *testing.T) {
	p, ok := LookupDecode("tova")
	if !ok || p.Observes != ObservesSteps || p.PromptRows != 1 || p.Shifts {
		t.Fatalf("tova's entry: %+v", p)
	}
	for _, o := range []DecodeOptions{
		{AsPolicy: true},
		{AsPolicy: true, Budget: 4, Ratio: 0.5},
		{AsPolicy: true, Ratio: 1.5},
		{AsPolicy: true, Budget: -1},
		{AsPolicy: true, Budget: 4, EvictEvery: -1},
	} {
		if p.Check(o) == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	for _, o := range []DecodeOptions{{AsPolicy: true, Budget: 4}, {AsPolicy: true, Ratio: 0.1}, {}} {
		if err := p.Check(o); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
	// With a stride, evictions are held and leave together.
	ev, err := p.New(DecodeOptions{Budget: 2, EvictEvery: 3})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]int
	for pos := range 6 {
		got, err := ev.Step(pos, make([]float32, len(ev.Kept())+1))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, got)
	}
	if want := [][]int{nil, nil, nil, nil, {0, 1, 2}, nil}; !slices.EqualFunc(out, want, slices.Equal) {
		t.Errorf("batched evictions %v, want %v", out, want)
	}
}
