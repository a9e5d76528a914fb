package server

import (
	"testing"

	"github.com/kvtrim/kvtrim"
)

// TestUnbuiltFieldsAtNeutral: llama-server's fields kvtrim serve does not
// build are taken at the values that leave their feature off, so a
// client that sends llama-server's defaults is answered; one step off
// and the field is refused.
func TestUnbuiltFieldsAtNeutral(t *testing.T) {
	for _, body := range []string{
		`{"prompt":"x","repeat_penalty":1,"frequency_penalty":0,"presence_penalty":0.0,"repeat_last_n":64}`,
		`{"prompt":"x","top_n_sigma":-1,"xtc_probability":0,"typical_p":1,"dynatemp_range":0,"dry_multiplier":0,"mirostat":0,"min_keep":0}`,
		`{"prompt":"x","grammar":"","json_schema":{},"response_format":{"type":"text"},"n":1,"lora":[]}`,
		`{"prompt":"x","tools":[],"tool_choice":"auto","echo":false,"return_progress":false,"timings_per_token":false,"adaptive_target":-1}`,
		`{"prompt":"x","grammar":null,"samplers":null}`,
		`{"prompt":"x","reasoning_budget_tokens":-1}`,
	} {
		if _, err := ParseCompletionRequest([]byte(body), testConfig().Sampling, kvtrim.Compression{}); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
	// n_cmpl is llama-server's name for n.
	if r, err := ParseCompletionRequest([]byte(`{"prompt":"x","n_cmpl":3,"n":2}`), testConfig().Sampling, kvtrim.Compression{}); err != nil || r.Choices != 3 {
		t.Errorf("n_cmpl 3: %v choices, %v", r, err)
	}
	for _, body := range []string{
		`{"prompt":"x","adaptive_target":0.5}`,
		`{"prompt":"x","reasoning_budget_tokens":100}`,
		`{"prompt":"x","samplers":["infill"]}`,
		`{"prompt":"x","samplers":"kqz"}`,
		`{"prompt":"x","response_format":{"type":"json_schema"}}`,
		`{"prompt":"x","n_cmpl":0}`,
		`{"prompt":"x","tool_choice":"required"}`,
		`{"prompt":"x","t_max_predict_ms":100}`,
		`{"prompt":"x","echo":true}`,
	} {
		if _, err := ParseCompletionRequest([]byte(body), testConfig().Sampling, kvtrim.Compression{}); err == nil {
			t.Errorf("%s: accepted", body)
		}
	}
}
