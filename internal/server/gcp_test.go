package server

import (
	"net/http"
	"testing"
)

// TestGCPPredict: with Vertex AI's prediction protocol on, POST /predict
// answers each instance as its endpoint would (named in camelCase or by
// its path), in order, with an error for a bad instance, and never
// streams.
func TestGCPPredict(t *testing.T) {
	cfg := testConfig()
	cfg.Parallel = 2
	cfg.Sampling.Temp = 0
	cfg.GCP = GCP{Enabled: true, HealthRoute: "/ping"}
	ts := startServer(t, cfg)
	var chat struct {
		Choices []struct{ Message struct{ Content string } }
	}
	ts.post("/v1/chat/completions", `{"max_tokens":6,"messages":[{"role":"user","content":"Say hello"}]}`, 200, &chat)
	var got struct {
		Predictions []struct {
			Choices []struct{ Message struct{ Content string } }
			Content string
			Error   *struct{ Message string }
		}
	}
	ts.post("/predict", `{"instances":[
		{"@requestFormat":"chatCompletions","max_tokens":6,"stream":true,"messages":[{"role":"user","content":"Say hello"}]},
		{"@requestFormat":"/completion","prompt":"Once upon a time","n_predict":4},
		{"@requestFormat":"nothingThere"},
		{"max_tokens":4}]}`, 200, &got)
	p := got.Predictions
	if len(p) != 4 || len(p[0].Choices) != 1 || p[0].Choices[0].Message.Content != chat.Choices[0].Message.Content ||
		p[1].Content == "" || p[2].Error == nil || p[3].Error == nil {
		t.Errorf("predictions %+v", got)
	}
	code, b := ts.do(t.Context(), http.MethodPost, "/predict", `{"instances":7}`)
	wantError(t, code, b, 400, typeInvalidRequest, "instances")
	ts.get("/ping", 200, nil)
}

// TestGCPFromEnv: AIP_MODE=PREDICTION turns the protocol on, AIP_HTTP_PORT
// sets the port and the routes get their leading slash.
func TestGCPFromEnv(t *testing.T) {
	env := map[string]string{"AIP_MODE": "PREDICTION", "AIP_HTTP_PORT": "9090", "AIP_PREDICT_ROUTE": "v1/predict"}
	g, port := GCPFromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if !g.Enabled || port != 9090 || g.PredictRoute != "/v1/predict" || g.HealthRoute != "" {
		t.Errorf("%+v, port %d", g, port)
	}
	if g, port := GCPFromEnv(func(string) (string, bool) { return "", false }); g.Enabled || port != 0 {
		t.Errorf("without AIP_MODE: %+v, port %d", g, port)
	}
}
