package kvtrim_test

import (
	"math"
	"testing"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/internal/testenv"
)

func loadModel(t *testing.T, name string) *kvtrim.Model {
	t.Helper()
	m, err := kvtrim.LoadModel(testenv.Library(t), testenv.ModelPath(t, name), kvtrim.ModelOptions{GPULayers: -1}, testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// maxAbsDiff is the largest difference between two logit vectors.
func maxAbsDiff(a, b []float32) float64 {
	worst := 0.0
	for i := range b {
		worst = math.Max(worst, math.Abs(float64(a[i]-b[i])))
	}
	return worst
}
