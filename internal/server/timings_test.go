package server

import "testing"

// TestTimingsCountDecodeSteps: as llama-server's, the generation speed is
// over the decode steps, the first token (from the prompt's logits)
// aside; one token has no speed.
func TestTimingsCountDecodeSteps(t *testing.T) {
	got := timingsOf(&result{promptN: 12, cacheN: 2, promptMs: 20, predictedN: 5, predictedMs: 40})
	if got.PredictedN != 5 || got.PredictedPerTokenMs != 10 || got.PredictedPerSecond != 100 || got.PromptN != 10 || got.PromptPerSecond != 500 {
		t.Errorf("timings %+v", got)
	}
	if one := timingsOf(&result{promptN: 3, promptMs: 1, predictedN: 1, predictedMs: 0.001}); one.PredictedPerSecond != 0 || one.PredictedPerTokenMs != 0 {
		t.Errorf("one token: %+v", one)
	}
}
