package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/kvtrim/kvtrim"
)

// loadPlan is the load bench serve --against sends to each server: the
// same requests, in the same order per client, to both.
type loadPlan struct {
	Clients  int `json:"clients"`
	Requests int `json:"requests_per_client"`
	// PromptMin..PromptMax and PredictMin..PredictMax are the ranges the
	// requests' prompt tokens and generated tokens are drawn from.
	PromptMin  int `json:"prompt_min"`
	PromptMax  int `json:"prompt_max"`
	PredictMin int `json:"predict_min"`
	PredictMax int `json:"predict_max"`
	// requests[c] is client c's requests, in order.
	requests [][]loadRequest
}

// loadRequest is one request of the plan.
type loadRequest struct {
	body    []byte
	stream  bool
	predict int
}

// loadRun is what one server did with the plan.
type loadRun struct {
	Server       string  `json:"server"`
	Rep          int     `json:"rep"`
	WallSeconds  float64 `json:"wall_s"`
	Requests     int     `json:"requests"` // answered in full
	Errors       int     `json:"errors"`
	Tokens       int     `json:"generated_tokens"`
	RequestsPerS float64 `json:"requests_per_s"`
	TokensPerS   float64 `json:"tokens_per_s"`
	P50          float64 `json:"p50_s"`
	P99          float64 `json:"p99_s"`
	// MeanSeconds is the mean time of a request. Under this closed load
	// it is about clients / RequestsPerS, whatever the order the server
	// serves them in.
	MeanSeconds float64 `json:"mean_s"`
	// SlotsPerDecode is the mean number of slots a llama_decode carried,
	// from the server's /metrics (llama-server's
	// n_busy_slots_per_decode; kvtrim's sequences over calls).
	SlotsPerDecode float64 `json:"slots_per_decode"`
	// DecodeShare and WaitShare are, for kvtrim serve, the shares of the
	// run's wall time its decoder spent in llama_decode and waiting for
	// slots with requests in hand (kvtrim_decode_seconds_total and
	// kvtrim_decode_wait_seconds_total).
	DecodeShare float64 `json:"decode_share,omitempty"`
	WaitShare   float64 `json:"wait_share,omitempty"`
	// PromptTokens is the prompt tokens the server decoded
	// (llamacpp:prompt_tokens_total; a prompt cache lowers it) and
	// Decodes its llama_decode calls (llama-server's n_decode_total,
	// kvtrim's kvtrim_decode_calls_total).
	PromptTokens float64 `json:"prompt_tokens"`
	Decodes      float64 `json:"decodes"`
	// CellsKept and CellsEvicted are, for kvtrim serve, the KV cells its
	// compression kept and dropped over the run (kvtrim_cells_kept_total,
	// kvtrim_cells_evicted_total): none evicted with the full cache.
	CellsKept    float64 `json:"cells_kept,omitempty"`
	CellsEvicted float64 `json:"cells_evicted,omitempty"`
	FirstError   string  `json:"first_error,omitempty"`
	// Answers is every request's record, in the order they ended.
	Answers []loadAnswer `json:"answers,omitempty"`
}

// loadAnswer is one request of a run, as the client saw it and as the
// server's timings told it: where a run's latencies differ, these say
// which requests waited and for what.
type loadAnswer struct {
	Client int `json:"client"`
	Index  int `json:"index"`
	// Start is when the request was sent, from the run's start; Seconds
	// how long it took to its last byte.
	Start   float64 `json:"start_s"`
	Seconds float64 `json:"seconds"`
	Stream  bool    `json:"stream"`
	Error   string  `json:"error,omitempty"`
	answerTimings
}

// answerTimings is the part of an answer's "timings" a loadAnswer keeps:
// the prompt tokens decoded and found cached, and the milliseconds of the
// prompt and of the generation, as the server measured them.
type answerTimings struct {
	PromptN     int     `json:"prompt_n"`
	CacheN      int     `json:"cache_n"`
	PromptMs    float64 `json:"prompt_ms"`
	PredictedN  int     `json:"predicted_n"`
	PredictedMs float64 `json:"predicted_ms"`
}

// againstReport is what bench serve --against writes with --json: every
// run, and the medians of each server.
type againstReport struct {
	Model   string   `json:"model"`
	Machine machine  `json:"machine"`
	Args    []string `json:"server_args"`
	// KvtrimArgs are the flags kvtrim serve had on top of Args.
	KvtrimArgs []string           `json:"kvtrim_args,omitempty"`
	Plan       loadPlan           `json:"plan"`
	Runs       []loadRun          `json:"runs"`
	Medians    map[string]loadRun `json:"medians"`
}

// newLoadPlan draws the plan's requests, seeded, from the demo story's
// tokens: each prompt is a stretch of them at its own offset (so no two
// requests share a prefix), every other request streamed.
func newLoadPlan(model *kvtrim.Model, p loadPlan, seed uint64) (loadPlan, error) {
	text, err := storyPrompt(model, p.PromptMax+512)
	if err != nil {
		return p, err
	}
	story, err := model.Vocab().Tokenize(text, false, false)
	if err != nil {
		return p, err
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	between := func(lo, hi int) int { return lo + rng.IntN(hi-lo+1) }
	p.requests = make([][]loadRequest, p.Clients)
	for c := range p.requests {
		for i := range p.Requests {
			n := between(p.PromptMin, p.PromptMax)
			off := rng.IntN(len(story) - n + 1)
			prompt := model.Vocab().Detokenize(story[off:off+n], false, false)
			r := loadRequest{stream: (c+i)%2 == 1, predict: between(p.PredictMin, p.PredictMax)}
			r.body, _ = json.Marshal(map[string]any{"prompt": prompt, "n_predict": r.predict, "ignore_eos": true, "stream": r.stream})
			p.requests[c] = append(p.requests[c], r)
		}
	}
	return p, nil
}

// runLoad sends the plan to base: each client its requests one after
// another, all clients at once.
func runLoad(ctx context.Context, base string, p loadPlan) loadRun {
	// A kept-alive connection per client, as a pool of clients would
	// have (the default keeps two).
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: p.Clients}}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	var run loadRun
	start := time.Now()
	var wg sync.WaitGroup
	for c, reqs := range p.requests {
		wg.Go(func() {
			for i, r := range reqs {
				t0 := time.Now()
				n, tm, err := sendLoad(ctx, client, base, r)
				took := time.Since(t0).Seconds()
				a := loadAnswer{Client: c, Index: i, Start: t0.Sub(start).Seconds(), Seconds: took, Stream: r.stream, answerTimings: tm}
				if err != nil {
					a.Error = err.Error()
				}
				mu.Lock()
				run.Answers = append(run.Answers, a)
				run.Tokens += n // 0 for a failed request
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	run.WallSeconds = time.Since(start).Seconds()
	var latencies []float64
	for _, a := range run.Answers {
		if a.Error != "" {
			run.Errors++
			run.FirstError = cmp.Or(run.FirstError, a.Error)
			continue
		}
		run.Requests++
		latencies = append(latencies, a.Seconds)
	}
	run.RequestsPerS = float64(run.Requests) / run.WallSeconds
	run.TokensPerS = float64(run.Tokens) / run.WallSeconds
	run.P50, run.P99 = quantile(latencies, 0.50), quantile(latencies, 0.99)
	for _, l := range latencies {
		run.MeanSeconds += l / float64(len(latencies))
	}
	m, _ := serverMetrics(ctx, base) // none: the run's other figures stand
	run.PromptTokens = m["llamacpp:prompt_tokens_total"]
	if v, ok := m["llamacpp:n_busy_slots_per_decode"]; ok {
		run.SlotsPerDecode = v
		run.Decodes = m["llamacpp:n_decode_total"]
	} else if calls := m["kvtrim_decode_calls_total"]; calls > 0 {
		run.Decodes = calls
		run.SlotsPerDecode = m["kvtrim_decode_sequences_total"] / calls
	}
	// kvtrim serve's own: it exports llama-server's gauges too.
	run.DecodeShare = m["kvtrim_decode_seconds_total"] / run.WallSeconds
	run.WaitShare = m["kvtrim_decode_wait_seconds_total"] / run.WallSeconds
	run.CellsKept, run.CellsEvicted = m["kvtrim_cells_kept_total"], m["kvtrim_cells_evicted_total"]
	return run
}

// quantile is the q-quantile of v (nearest rank), or 0 for none.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Sorted(slices.Values(v))
	i := int(q*float64(len(v))+0.999999) - 1
	return v[min(max(i, 0), len(v)-1)]
}

// sendLoad sends one request to /completion and reads the whole answer,
// streamed or not; it returns the tokens generated, which must be the
// request's n_predict, and the answer's timings.
func sendLoad(ctx context.Context, client *http.Client, base string, r loadRequest) (int, answerTimings, error) {
	var last struct {
		Predicted int           `json:"tokens_predicted"`
		Stop      bool          `json:"stop"`
		Timings   answerTimings `json:"timings"`
	}
	req, err := http.NewRequestWithContext(ctx, "POST", base+"/completion", bytes.NewReader(r.body))
	if err != nil {
		return 0, answerTimings{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	// Go's client retries a request whose kept-alive connection the server
	// had already closed only when it is marked idempotent, as OpenAI's
	// client libraries retry connection errors; llama-server closes such
	// connections under load, and the bench measures the servers, not
	// that race.
	req.Header["X-Idempotency-Key"] = nil // idempotent, and not sent
	resp, err := client.Do(req)
	if err != nil {
		return 0, last.Timings, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return 0, last.Timings, fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if !r.stream {
		if err := json.NewDecoder(resp.Body).Decode(&last); err != nil {
			return 0, last.Timings, err
		}
	} else {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			if err := json.Unmarshal([]byte(data), &last); err != nil {
				return 0, last.Timings, fmt.Errorf("stream: %w", err)
			}
			if last.Stop {
				break
			}
		}
		if err := sc.Err(); err != nil {
			return 0, last.Timings, err
		}
	}
	if !last.Stop || last.Predicted != r.predict {
		return 0, last.Timings, fmt.Errorf("answer ended after %d of %d tokens", last.Predicted, r.predict)
	}
	return last.Predicted, last.Timings, nil
}

// serverProcess is a server started for a run.
type serverProcess struct {
	cmd    *exec.Cmd
	base   string
	exited chan error
}

// startServerProcess runs bin with args on a free port of 127.0.0.1, its
// output into logPath, and waits until /health answers 200.
func startServerProcess(ctx context.Context, bin string, args []string, logPath string) (*serverProcess, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, append(slices.Clone(args), "--host", "127.0.0.1", "--port", strconv.Itoa(port))...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	sp := &serverProcess{cmd: cmd, base: "http://127.0.0.1:" + strconv.Itoa(port), exited: make(chan error, 1)}
	go func() { sp.exited <- cmd.Wait() }()
	for deadline := time.Now().Add(3 * time.Minute); ; {
		select {
		case err := <-sp.exited:
			sp.exited <- err
			return nil, fmt.Errorf("%s exited before it was ready (%v); its log: %s", bin, err, logPath)
		case <-ctx.Done():
			sp.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if resp, err := http.Get(sp.base + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return sp, nil
			}
		}
		if time.Now().After(deadline) {
			sp.stop()
			return nil, fmt.Errorf("%s was not ready after 3 minutes; its log: %s", bin, logPath)
		}
	}
}

// stop ends the server: SIGTERM, then SIGKILL after 10 s.
func (sp *serverProcess) stop() {
	sp.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-sp.exited:
	case <-time.After(10 * time.Second):
		sp.cmd.Process.Kill()
		<-sp.exited
	}
}

// freePort is a TCP port of 127.0.0.1 free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// againstFlags are bench serve --against's own flags.
type againstFlags struct {
	bin                  string
	parallel             int
	clients              []int
	requests             int
	promptRange, predict []int
	reps                 int
	seed                 uint64
	serverArgs           string
	// kvtrimArgs go to kvtrim serve alone: its compression, say, to
	// measure it against llama-server's full cache.
	kvtrimArgs string
}

// runAgainst runs llama-server (f.bin, or the llama-server in that folder)
// and kvtrim serve on the same model and flags, alternating which goes
// first, --reps times for each client count, and prints both servers'
// medians and their ratios.
func runAgainst(ctx context.Context, g genFlags, libArg string, f againstFlags, stdout io.Writer, out *outputFlags, log zerolog.Logger, model *kvtrim.Model, mach machine) error {
	bin := f.bin
	if st, err := os.Stat(bin); err == nil && st.IsDir() {
		bin = filepath.Join(bin, "llama-server")
	}
	if _, err := os.Stat(bin); err != nil {
		return usageErrorf("--against %s: no llama-server there: %v", f.bin, err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"-m", g.model, "-c", strconv.Itoa(g.nCtx), "-np", strconv.Itoa(f.parallel), "-t", strconv.Itoa(g.threads), "--metrics"}
	if g.flashAttn != "" && g.flashAttn != "auto" {
		args = append(args, "-fa", g.flashAttn)
	}
	args = append(args, strings.Fields(f.serverArgs)...)
	// kvtrim serve loads the libllama beside llama-server when there is
	// one, so both run the same llama.cpp.
	kvOnly := strings.Fields(f.kvtrimArgs)
	kvArgs := append(append([]string{"serve"}, args...), kvOnly...)
	if lib := filepath.Dir(bin); hasLibllama(lib) {
		kvArgs = append(kvArgs, "--lib", lib)
	} else if libArg != "" {
		kvArgs = append(kvArgs, "--lib", libArg)
	}
	servers := []struct {
		name, bin string
		args      []string
	}{{"llama-server", bin, args}, {"kvtrim", self, kvArgs}}
	logDir, err := os.MkdirTemp("", "kvtrim-bench-serve-")
	if err != nil {
		return err
	}
	var md strings.Builder
	var reports []againstReport
	for _, clients := range f.clients {
		plan, err := newLoadPlan(model, loadPlan{Clients: clients, Requests: f.requests, PromptMin: f.promptRange[0], PromptMax: f.promptRange[1],
			PredictMin: f.predict[0], PredictMax: f.predict[1]}, f.seed)
		if err != nil {
			return err
		}
		rep := againstReport{Model: g.model, Machine: mach, Args: args, KvtrimArgs: kvOnly, Plan: plan, Medians: map[string]loadRun{}}
		for r := range f.reps {
			order := []int{0, 1}
			if r%2 == 1 {
				order = []int{1, 0}
			}
			for _, i := range order {
				s := servers[i]
				logPath := filepath.Join(logDir, fmt.Sprintf("%s-c%d-r%d.log", s.name, clients, r))
				sp, err := startServerProcess(ctx, s.bin, s.args, logPath)
				if err != nil {
					return err
				}
				run := runLoad(ctx, sp.base, plan)
				sp.stop()
				run.Server, run.Rep = s.name, r
				log.Info().Str("server", s.name).Int("clients", clients).Int("rep", r).Float64("req_s", run.RequestsPerS).
					Float64("tok_s", run.TokensPerS).Float64("p50_s", run.P50).Float64("p99_s", run.P99).Float64("mean_s", run.MeanSeconds).Float64("slots_per_decode", run.SlotsPerDecode).Float64("decode_share", run.DecodeShare).Float64("wait_share", run.WaitShare).Int("errors", run.Errors).Str("first_error", run.FirstError).Msg("run")
				rep.Runs = append(rep.Runs, run)
				if err := ctx.Err(); err != nil {
					return err
				}
			}
		}
		for _, s := range servers {
			rep.Medians[s.name] = medianRun(rep.Runs, s.name)
		}
		rep.markdown(&md)
		reports = append(reports, rep)
	}
	fmt.Fprint(stdout, md.String())
	return out.write(reports, md.String(), nil)
}

// hasLibllama reports whether dir holds a libllama.
func hasLibllama(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "libllama*.so*"))
	return len(m) > 0
}

// medianRun is the median of each measure over server's runs.
func medianRun(runs []loadRun, server string) loadRun {
	var req, tok, p50, p99, mean, errs, spd []float64
	for _, r := range runs {
		if r.Server == server {
			req, tok = append(req, r.RequestsPerS), append(tok, r.TokensPerS)
			p50, p99, errs = append(p50, r.P50), append(p99, r.P99), append(errs, float64(r.Errors))
			mean = append(mean, r.MeanSeconds)
			spd = append(spd, r.SlotsPerDecode)
		}
	}
	return loadRun{Server: server, RequestsPerS: quantile(req, 0.5), TokensPerS: quantile(tok, 0.5), P50: quantile(p50, 0.5), P99: quantile(p99, 0.5),
		MeanSeconds: quantile(mean, 0.5),
		Errors:      int(quantile(errs, 0.5)), SlotsPerDecode: quantile(spd, 0.5)}
}

// markdown writes the plan's line and the medians' table with the ratios.
func (r againstReport) markdown(b *strings.Builder) {
	p := r.Plan
	runs := len(r.Runs) / max(1, len(r.Medians))
	fmt.Fprintf(b, "%s; %s; %s; %d clients x %d requests, prompts of %d-%d tokens, n_predict %d-%d, every other request streamed; medians of %d runs each, alternating\n\n",
		r.Model, r.Machine, strings.Join(r.Args, " ")+kvtrimOnly(r.KvtrimArgs), p.Clients, p.Requests, p.PromptMin, p.PromptMax, p.PredictMin, p.PredictMax, runs)
	b.WriteString("| server | requests/s | tokens/s | p50 s | p99 s | mean s | errors (median) | slots per decode |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, name := range []string{"llama-server", "kvtrim"} {
		m := r.Medians[name]
		fmt.Fprintf(b, "| %s | %.2f | %.1f | %.2f | %.2f | %.2f | %d | %.2f |\n", name, m.RequestsPerS, m.TokensPerS, m.P50, m.P99, m.MeanSeconds, m.Errors, m.SlotsPerDecode)
	}
	l, k := r.Medians["llama-server"], r.Medians["kvtrim"]
	fmt.Fprintf(b, "| kvtrim / llama-server | %.2fx | %.2fx | %.2fx | %.2fx | %.2fx | | |\n\n", ratio(k.RequestsPerS, l.RequestsPerS), ratio(k.TokensPerS, l.TokensPerS),
		ratio(k.P50, l.P50), ratio(k.P99, l.P99), ratio(k.MeanSeconds, l.MeanSeconds))
}

// kvtrimOnly describes the flags kvtrim serve had alone, if any.
func kvtrimOnly(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return " (kvtrim serve also " + strings.Join(args, " ") + ")"
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// check validates the flags.
func (f againstFlags) check() error {
	switch {
	case f.parallel < 1:
		return usageErrorf("-np %d: give at least 1 slot", f.parallel)
	case len(f.clients) == 0 || slices.Min(f.clients) < 1:
		return usageErrorf("--clients %v: give counts >= 1", f.clients)
	case f.requests < 1 || f.reps < 1:
		return usageErrorf("--requests and --reps must be at least 1")
	case len(f.promptRange) != 2 || f.promptRange[0] < 1 || f.promptRange[1] < f.promptRange[0]:
		return usageErrorf("--prompt-range %v: give MIN,MAX tokens, 1 <= MIN <= MAX", f.promptRange)
	case len(f.predict) != 2 || f.predict[0] < 1 || f.predict[1] < f.predict[0]:
		return usageErrorf("--predict-range %v: give MIN,MAX tokens, 1 <= MIN <= MAX", f.predict)
	}
	return nil
}
