package server

import (
	"strings"
	"testing"

	"github.com/kvtrim/kvtrim"
)

// seeds are request bodies, good and bad, for the parsers' fuzz targets.
var fuzzSeeds = []string{
	`{"prompt":"Once upon a time","n_predict":16,"temperature":0}`,
	`{"prompt":[1,2,3],"stop":["\n","end"],"seed":42,"stream":true}`,
	`{"prompt":["one"],"max_tokens":-1,"top_k":0,"top_p":1,"min_p":0}`,
	`{"prompt":"x","kvtrim":{"policy":"snapkv","budget":64,"window":8,"lookahead":0}}`,
	`{"prompt":"x","kvtrim":{"policy":"h2o","ratio":0.5}}`,
	`{"prompt":"x","kvtrim":{"policy":"streaming","sinks":4,"recent":60}}`,
	`{"messages":[{"role":"user","content":"hi"}],"max_tokens":8}`,
	`{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true,"stream_options":{"include_usage":true}}`,
	`{"prompt":"x","n_predict":"ten"}`,
	`{"prompt":`, `[]`, `null`, `{}`, `{"prompt":[[1,2]]}`, `{"prompt":[1,"a"]}`, `{"prompt":[[1,2],"a",{"prompt_string":"b"}]}`, `{"prompt":[["a"],[]]}`, `{"seed":-2,"prompt":"x"}`,
	`{"prompt":"x","kvtrim":{"policy":"snapkv","budget":1e300}}`, `{"prompt":"x","temperature":1e400}`,
	// The cases of the load and fault probes (issue 12): a short prompt
	// compressed then handed to H2O, a stream that would never end, a
	// slot that does not exist, and a longer prompt (TestHugePromptRefusedEarly
	// sends the huge ones: a seed that size slows the fuzzer a hundredfold).
	`{"prompt":"Once upon a time, there was a small dog named Pip. Pip lived in a","n_predict":40,"temperature":0,"kvtrim":{"policy":"snapkv","ratio":0.2,"decode_policy":"h2o","heavy":32,"recent":32}}`,
	`{"prompt":"Once upon a time","n_predict":-1,"ignore_eos":true,"stream":true}`,
	`{"prompt":"x","id_slot":99}`,
	// OpenAI's Responses API, and the fields of issue 14.
	`{"input":"hi","instructions":"Book","max_output_tokens":8,"stream":true,"timings_per_token":true,"return_progress":true}`,
	`{"input":[{"role":"user","content":[{"type":"input_text","text":"a"}]},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"b"}]}]}`,
	`{"input":[{"type":"function_call","call_id":"c","name":"f","arguments":"{}"}]}`, `{"input":7}`, `{"input":"x","previous_response_id":"r"}`,
	`{"prompt":"x","n_probs":5,"post_sampling_probs":true,"response_fields":["content","generation_settings/n_predict"],"verbose":true}`,
	`{"prompt":"` + strings.Repeat("Once upon a time, there was a little dog. ", 40) + `","n_predict":4}`,
}

// FuzzParseCompletionRequest checks that the completion parser never
// panics and that what it accepts is valid.
func FuzzParseCompletionRequest(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseCompletionRequest(body, DefaultSampling(), kvtrim.Compression{})
		checkParsed(t, r, err)
		if err != nil {
			return
		}
		prompts := r.Batch
		if prompts == nil {
			prompts = []*Request{r}
		}
		for _, p := range prompts {
			if !p.HasTokens && p.Prompt == "" && len(p.PromptPieces) == 0 || p.Batch != nil {
				t.Fatalf("accepted an empty or nested prompt: %q", body)
			}
		}
	})
}

// FuzzParseChatRequest does the same for chat requests.
func FuzzParseChatRequest(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseChatRequest(body, DefaultSampling(), kvtrim.Compression{})
		checkParsed(t, r, err)
		if err == nil && len(r.Messages) == 0 {
			t.Fatalf("accepted no messages: %q", body)
		}
	})
}

// FuzzParseResponsesRequest checks the Responses API's conversion and
// parse: never a panic, a 400 for what it refuses, messages for what it
// takes.
func FuzzParseResponsesRequest(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		chat, err := chatBodyOfResponses(body)
		var r *Request
		if err == nil {
			r, err = ParseChatRequest(chat, DefaultSampling(), kvtrim.Compression{})
		}
		checkParsed(t, r, err)
		if err == nil && len(r.Messages) == 0 {
			t.Fatalf("accepted no messages: %q", body)
		}
	})
}

func checkParsed(t *testing.T, r *Request, err error) {
	t.Helper()
	if err != nil {
		if ae := asAPIError(err); ae.Code != 400 {
			t.Fatalf("parse error answered %d, want 400: %v", ae.Code, err)
		}
		return
	}
	if err := r.Sampling.validate(); err != nil {
		t.Fatalf("accepted invalid sampling: %v", err)
	}
	if err := r.Compression.Check(); err != nil {
		t.Fatalf("accepted invalid compression: %v", err)
	}
}
