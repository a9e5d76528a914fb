package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/internal/server"
)

// capacityRow is one configuration of bench serve: how many conversations
// of the given length its slots hold in -c cells, and how they ran.
type capacityRow struct {
	Policy string `json:"policy"`
	Slots  int    `json:"slots"` // concurrent conversations
	// CellsPerSlot is a conversation's cells, rounded up to llama.cpp's
	// 256-cell unit of a sequence's stream; Slots of them fit in -c.
	CellsPerSlot int   `json:"cells_per_slot"`
	PeakCells    int   `json:"peak_cells"` // the slots', plus SnapKV's one temporary context when it needs one (prompt-sized, or budget + chunk)
	KVBytesPeak  int64 `json:"kv_bytes_peak"`
	Succeeded    int   `json:"succeeded"`
	// PrefillSeconds is the wall time of the first turns: every
	// conversation's prompt, sent at once, with one generated token.
	PrefillSeconds float64 `json:"prefill_wall_s"`
	// DecodeSeconds is the wall time of the second turns, sent at once:
	// each continues its cached conversation and generates -n tokens, so
	// every slot decodes at the same time.
	DecodeSeconds float64 `json:"decode_wall_s"`
	Generated     int     `json:"generated_tokens"`     // in the second turns
	TokensPerSec  float64 `json:"tokens_per_s"`         // Generated over DecodeSeconds: all slots together
	DecodeTokSMed float64 `json:"decode_tok_s_median"`  // a second turn's own decode speed, median
	CachedMin     int     `json:"cached_min"`           // the fewest prompt tokens a second turn found cached
	BatchMean     float64 `json:"sequences_per_decode"` // sequences per llama_decode in the second turns
}

// capacityReport is what bench serve writes with --json.
type capacityReport struct {
	Model        string        `json:"model"`
	Machine      machine       `json:"machine"`
	CtxSize      int           `json:"ctx_size"`
	PromptTokens int           `json:"prompt_tokens"`
	Generated    int           `json:"generated_per_conversation"`
	Ratio        float64       `json:"ratio"`
	Rows         []capacityRow `json:"rows"`
}

// cmdBenchServe measures kvtrim serve's capacity at a fixed -c: as many
// conversations of --prompt-tokens as the slots hold, with the full cache
// and with SnapKV at --ratio, sent at once, side by side in one run.
func cmdBenchServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench serve", "bench serve -m MODEL -c CELLS [--prompt-tokens N] [--ratio R] [flags]")
	var c common
	var g genFlags
	g.registerModel(fs)
	g.registerPolicyOptions(fs)
	c.register(fs)
	fs.IntVarP(&g.nPredict, "n-predict", "n", 32, "tokens generated per conversation")
	promptTokens := fs.Int("prompt-tokens", 2000, "tokens of each conversation's prompt (the demo's story text, repeated)")
	ratio := fs.Float64("ratio", 0.1, "SnapKV's budget, as a share of the prompt")
	var af againstFlags
	fs.StringVar(&af.bin, "against", "", "llama-server binary (or its folder): compare it with kvtrim serve under the same load, alternating")
	fs.IntVar(&af.parallel, "parallel", 4, "with --against: both servers' slots (-np)")
	fs.IntSliceVar(&af.clients, "clients", []int{8, 32}, "with --against: concurrent clients, each sending its requests one after another")
	fs.IntVar(&af.requests, "requests", 10, "with --against: requests per client")
	fs.IntSliceVar(&af.promptRange, "prompt-range", []int{20, 3000}, "with --against: MIN,MAX prompt tokens, drawn uniformly")
	fs.IntSliceVar(&af.predict, "predict-range", []int{16, 64}, "with --against: MIN,MAX tokens to generate, drawn uniformly")
	fs.IntVar(&af.reps, "reps", 3, "with --against: runs of each server per client count (medians shown)")
	fs.Uint64Var(&af.seed, "seed", 1, "with --against: seed of the drawn requests")
	fs.StringVar(&af.serverArgs, "server-args", "", "with --against: more flags for both servers, space-separated")
	fs.StringVar(&af.kvtrimArgs, "kvtrim-args", "", "with --against: more flags for kvtrim serve alone (its compression: \"--kv-policy snapkv --kv-ratio 0.1\"), space-separated")
	out := addOutputFlags(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if af.bin != "" {
		return benchAgainst(ctx, fs, g, c, af, stdout, stderr, out)
	}
	switch {
	case g.model == "":
		return usageErrorf("no model: give a GGUF file with -m")
	case g.nCtx < 1:
		return usageErrorf("-c %d: bench serve compares at a fixed -c; give the cells", g.nCtx)
	case *promptTokens < 64 || g.nPredict < 1:
		return usageErrorf("--prompt-tokens (at least 64) and -n (at least 1) must be positive")
	case !(*ratio > 0 && *ratio < 1):
		return usageErrorf("--ratio %g: give a share in (0, 1)", *ratio)
	}
	if err := out.check(); err != nil {
		return err
	}
	log, lib, err := c.open(ctx, &g, stderr, false)
	defer c.close()
	if err != nil {
		return err
	}
	model, err := kvtrim.LoadModel(lib, g.model, g.modelOptions(), log)
	if err != nil {
		return err
	}
	defer model.Close()
	prompt, err := storyPrompt(model, *promptTokens)
	if err != nil {
		return err
	}
	rep := capacityReport{Model: g.model, Machine: describeMachine(lib), CtxSize: g.nCtx, PromptTokens: *promptTokens, Generated: g.nPredict, Ratio: *ratio}
	// A slot holds the prompt, the few tokens its conversation adds (its
	// first sentence, the first answer, " And then") and the answer, with
	// a cell to spare: as llama-server, kvtrim serve stops a generation
	// that would fill the slot's last cell.
	margin := g.nPredict + 32
	snap := g.comp
	snap.Policy, snap.Ratio, snap.Budget = kvtrim.PolicySnapKV, *ratio, 0
	for _, cfg := range []struct {
		comp  kvtrim.Compression
		cells int // a slot's cells
	}{
		{kvtrim.Compression{Policy: kvtrim.PolicyNone}, *promptTokens + margin},
		{snap, snap.BudgetFor(*promptTokens) + margin},
	} {
		row, err := runCapacity(ctx, model, g, cfg.comp, cfg.cells, prompt, log)
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.comp.Policy, err)
		}
		rep.Rows = append(rep.Rows, row)
		log.Info().Msgf("%s: %d of %d conversations; prompts %.1f s, second turns %.1f s", row.Policy, row.Succeeded, row.Slots, row.PrefillSeconds, row.DecodeSeconds)
	}
	md := rep.markdown()
	fmt.Fprint(stdout, md)
	return out.write(rep, md, nil)
}

// benchAgainst is bench serve --against: kvtrim serve beside llama-server
// under the same drawn load (runAgainst).
func benchAgainst(ctx context.Context, fs *pflag.FlagSet, g genFlags, c common, af againstFlags, stdout, stderr io.Writer, out *outputFlags) error {
	switch {
	case g.model == "":
		return usageErrorf("no model: give a GGUF file with -m")
	case g.nCtx < 1:
		return usageErrorf("-c %d: give both servers' context cells", g.nCtx)
	}
	if g.threads < 1 {
		g.threads = runtime.NumCPU()
	}
	if err := af.check(); err != nil {
		return err
	}
	if err := out.check(); err != nil {
		return err
	}
	// The model is loaded here only to draw the prompts.
	log, model, err := c.openModel(ctx, &g, stderr)
	defer c.close()
	if err != nil {
		return err
	}
	defer model.Close()
	if !fs.Changed("flash-attn") {
		g.flashAttn = ""
	}
	return runAgainst(ctx, g, c.lib, af, stdout, out, log, model, describeMachine(model.Library()))
}

// streamCells is the cells llama.cpp gives a sequence of n cells in a
// context with a stream per sequence: n rounded up to 256.
func streamCells(n int) int { return (n + 255) / 256 * 256 }

// runCapacity serves -c cells split into slots of cells each (as llama.cpp
// rounds them), and runs two turns of one conversation per slot: the
// prompts, all at once, then a continuation of each, all at once, which
// finds its conversation cached and decodes -n tokens beside the others.
func runCapacity(ctx context.Context, model *kvtrim.Model, g genFlags, comp kvtrim.Compression, cells int, prompt string, log zerolog.Logger) (capacityRow, error) {
	cells = streamCells(cells)
	slots := g.nCtx / cells
	row := capacityRow{Policy: comp.Policy, Slots: slots, CellsPerSlot: cells, PeakCells: slots * cells}
	if slots < 1 {
		return row, fmt.Errorf("-c %d holds no conversation of %d cells", g.nCtx, cells)
	}
	srv, err := server.New(server.Config{Parallel: slots, CtxSize: slots * cells, Batch: g.nBatch, UBatch: g.nUbat, Threads: g.threads,
		FlashAttn: g.flashAttn, Sampling: server.DefaultSampling(), PromptReuse: server.DefaultPromptReuse(), Compression: comp, QueueSize: slots, Metrics: true}, log)
	if err != nil {
		return row, err
	}
	if err := srv.Start(model); err != nil {
		return row, err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return row, err
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(ln)
	defer hs.Close()
	base := "http://" + ln.Addr().String()

	prompts := make([]string, slots)
	for i := range prompts {
		// Each conversation its own: a different first sentence.
		prompts[i] = fmt.Sprintf("Conversation %d. %s", i, prompt)
	}
	first, err := sendAll(ctx, base, prompts, 1)
	if err != nil {
		return row, err
	}
	row.PrefillSeconds = first.wall.Seconds()
	for i, a := range first.answers {
		if first.errs[i] == nil {
			prompts[i] += a.Content + " And then"
		}
	}
	before, err := decodeCounters(ctx, base)
	if err != nil {
		return row, err
	}
	second, err := sendAll(ctx, base, prompts, g.nPredict)
	if err != nil {
		return row, err
	}
	after, err := decodeCounters(ctx, base)
	if err != nil {
		return row, err
	}
	if calls := after[0] - before[0]; calls > 0 {
		row.BatchMean = (after[1] - before[1]) / calls
	}
	row.DecodeSeconds = second.wall.Seconds()
	var speeds []float64
	row.CachedMin = -1
	for i, a := range second.answers {
		if first.errs[i] != nil || second.errs[i] != nil {
			continue
		}
		row.Succeeded++
		row.Generated += a.Timings.PredictedN
		speeds = append(speeds, a.Timings.PredictedPerSecond)
		if row.CachedMin < 0 || a.Timings.CacheN < row.CachedMin {
			row.CachedMin = a.Timings.CacheN
		}
		f := first.answers[i]
		if f.Kvtrim.PromptTokens > 0 && row.KVBytesPeak == 0 {
			perCell := f.Kvtrim.KVBytesBefore / int64(f.Kvtrim.PromptTokens)
			if comp.PrefillsAside(f.Kvtrim.PromptTokens) {
				// The one temporary context a compressed prefill has at a
				// time: prompt-sized, or budget + chunk cells when chunked;
				// none (a peak of the slot's cells) when it prefilled in
				// its slot's stream.
				row.PeakCells += max(0, f.Kvtrim.NCtxPeak-cells)
			}
			row.KVBytesPeak = int64(row.PeakCells) * perCell
		}
	}
	if row.Succeeded == 0 {
		return row, errors.Join(append(first.errs, second.errs...)...)
	}
	row.TokensPerSec = float64(row.Generated) / row.DecodeSeconds
	slices.Sort(speeds)
	row.DecodeTokSMed = speeds[len(speeds)/2]
	return row, nil
}

// turnAnswer is what bench serve reads of a /completion answer.
type turnAnswer struct {
	Content string `json:"content"`
	Timings struct {
		CacheN             int     `json:"cache_n"`
		PredictedN         int     `json:"predicted_n"`
		PredictedPerSecond float64 `json:"predicted_per_second"`
	} `json:"timings"`
	Kvtrim struct {
		PromptTokens  int   `json:"prompt_tokens"`
		KVBytesBefore int64 `json:"kv_bytes_before"`
		NCtxPeak      int   `json:"n_ctx_peak"`
	} `json:"kvtrim"`
}

// turn is one round of requests: the answers, each one's error, and the
// wall time of the round.
type turn struct {
	answers []turnAnswer
	errs    []error
	wall    time.Duration
}

// sendAll sends every prompt to base's /completion at once, each for n
// greedy tokens, and waits for all the answers. The error is set only when
// every request failed.
func sendAll(ctx context.Context, base string, prompts []string, n int) (turn, error) {
	t := turn{answers: make([]turnAnswer, len(prompts)), errs: make([]error, len(prompts))}
	start := time.Now()
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Go(func() {
			body, _ := json.Marshal(map[string]any{"prompt": p, "n_predict": n, "temperature": 0, "ignore_eos": true})
			t.errs[i] = postJSON(ctx, base+"/completion", body, &t.answers[i])
		})
	}
	wg.Wait()
	t.wall = time.Since(start)
	for _, err := range t.errs {
		if err == nil {
			return t, nil
		}
	}
	return t, errors.Join(t.errs...)
}

// postJSON posts body to url and decodes the 200 answer into out.
func postJSON(ctx context.Context, url string, body []byte, out any) error {
	b, err := httpDo(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// decodeCounters reads the server's llama_decode calls and the sequences
// they carried from /metrics.
func decodeCounters(ctx context.Context, base string) ([2]float64, error) {
	m, err := serverMetrics(ctx, base)
	if err != nil {
		return [2]float64{}, err
	}
	var out [2]float64
	for i, name := range []string{"kvtrim_decode_calls_total", "kvtrim_decode_sequences_total"} {
		v, ok := m[name]
		if !ok {
			return out, fmt.Errorf("metrics: no %s", name)
		}
		out[i] = v
	}
	return out, nil
}

// serverMetrics reads the values of base's /metrics by name.
func serverMetrics(ctx context.Context, base string) (map[string]float64, error) {
	b, err := httpDo(ctx, "GET", base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	values := map[string]float64{}
	for line := range strings.Lines(string(b)) {
		if name, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok && !strings.HasPrefix(name, "#") {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				values[name] = f
			}
		}
	}
	return values, nil
}

// httpDo sends a request and returns the body of its 200 answer, or an
// error naming the status and the answer.
func httpDo(ctx context.Context, method, url string, body io.Reader) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: status %d: %s", method, url, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// markdown is the side-by-side table.
func (r capacityReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s; %s; -c %d, conversations of %d prompt tokens, then a second turn of %d generated tokens, all slots at once\n\n", r.Model, r.Machine, r.CtxSize, r.PromptTokens, r.Generated)
	b.WriteString("| policy | conversations | cells each | peak cells | peak KV MiB | finished | prompts wall s | second turns wall s | decode tokens/s, all | decode tok/s, each (median) | sequences per llama_decode | fewest cached |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %.1f | %d | %.1f | %.1f | %.1f | %.1f | %.2f | %d |\n", row.Policy, row.Slots, row.CellsPerSlot, row.PeakCells,
			float64(row.KVBytesPeak)/(1<<20), row.Succeeded, row.PrefillSeconds, row.DecodeSeconds, row.TokensPerSec, row.DecodeTokSMed, row.BatchMean, row.CachedMin)
	}
	if len(r.Rows) == 2 && r.Rows[0].Slots > 0 && r.Rows[0].PeakCells > 0 && r.Rows[0].TokensPerSec > 0 {
		full, snap := r.Rows[0], r.Rows[1]
		perCellFull := float64(full.Slots) / float64(full.PeakCells)
		perCellSnap := float64(snap.Slots) / float64(snap.PeakCells)
		fmt.Fprintf(&b, "\nconversations in the same -c: %.1fx; per peak KV memory (any temporary context counted): %.1fx; decode tokens/s of all slots together: %.1fx\n",
			float64(snap.Slots)/float64(full.Slots), perCellSnap/perCellFull, snap.TokensPerSec/full.TokensPerSec)
	}
	return b.String()
}
