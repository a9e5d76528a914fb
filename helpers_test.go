package kvtrim_test

import (
	"context"
	"math"
	"testing"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/internal/testenv"
)

func loadModel(t testing.TB, name string) *kvtrim.Model {
	t.Helper()
	m, err := kvtrim.LoadModel(testenv.Library(t), testenv.ModelPath(t, name), kvtrim.ModelOptions{GPULayers: -1}, testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// prefilled makes a session over m with opt and prefills prompt; the session
// is closed when the test ends.
func prefilled(t *testing.T, m *kvtrim.Model, opt kvtrim.SessionOptions, prompt string) (*kvtrim.Session, []kvtrim.Token) {
	t.Helper()
	s, err := m.NewSession(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	toks, err := s.Tokenize(prompt)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Prefill(context.Background(), toks); err != nil {
		t.Fatal(err)
	}
	return s, toks
}

// maxAbsDiff is the largest difference between two logit vectors.
func maxAbsDiff(a, b []float32) float64 {
	worst := 0.0
	for i := range b {
		worst = math.Max(worst, math.Abs(float64(a[i]-b[i])))
	}
	return worst
}
