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
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/internal/server"
)

// capacityRow is one configuration of bench serve: how many conversations
// of the given length its slots hold in -c cells, and how they ran.
type capacityRow struct {
	Policy        string  `json:"policy"`
	Slots         int     `json:"slots"`          // concurrent conversations
	CellsPerSlot  int     `json:"cells_per_slot"` // -c / slots
	PeakCells     int     `json:"peak_cells"`     // -c, plus SnapKV's one prompt-sized temporary context
	KVBytesPeak   int64   `json:"kv_bytes_peak"`
	Succeeded     int     `json:"succeeded"`
	WallSeconds   float64 `json:"wall_s"`
	Generated     int     `json:"generated_tokens"`
	TokensPerSec  float64 `json:"tokens_per_s"`        // all slots' generated tokens over the wall time
	DecodeTokSMed float64 `json:"decode_tok_s_median"` // a request's own decode speed, median
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
	out := addOutputFlags(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
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
	model, err := kvtrim.LoadModel(lib, g.model, kvtrim.ModelOptions{GPULayers: int32(g.gpuLayers)}, log)
	if err != nil {
		return err
	}
	defer model.Close()
	prompt, err := storyPrompt(model, *promptTokens)
	if err != nil {
		return err
	}
	rep := capacityReport{Model: g.model, Machine: describeMachine(lib), CtxSize: g.nCtx, PromptTokens: *promptTokens, Generated: g.nPredict, Ratio: *ratio}
	margin := g.nPredict + 16
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
		log.Info().Msgf("%s: %d of %d conversations in %.1f s", row.Policy, row.Succeeded, row.Slots, row.WallSeconds)
	}
	md := rep.markdown()
	fmt.Fprint(stdout, md)
	return out.write(rep, md, nil)
}

// runCapacity serves -c cells split into slots of cells each, sends one
// conversation per slot at once, and measures them.
func runCapacity(ctx context.Context, model *kvtrim.Model, g genFlags, comp kvtrim.Compression, cells int, prompt string, log zerolog.Logger) (capacityRow, error) {
	slots := g.nCtx / cells
	row := capacityRow{Policy: comp.Policy, Slots: slots, CellsPerSlot: cells, PeakCells: slots * cells}
	if slots < 1 {
		return row, fmt.Errorf("-c %d holds no conversation of %d cells", g.nCtx, cells)
	}
	srv, err := server.New(server.Config{Parallel: slots, CtxSize: slots * cells, Batch: g.nBatch, UBatch: g.nUbat, Threads: g.threads,
		FlashAttn: g.flashAttn, Sampling: server.DefaultSampling(), Compression: comp}, log)
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
	url := "http://" + ln.Addr().String() + "/completion"

	type answer struct {
		Timings struct {
			PredictedN         int     `json:"predicted_n"`
			PredictedPerSecond float64 `json:"predicted_per_second"`
		} `json:"timings"`
		Kvtrim struct {
			PromptTokens  int   `json:"prompt_tokens"`
			KVBytesBefore int64 `json:"kv_bytes_before"`
		} `json:"kvtrim"`
	}
	answers := make([]answer, slots)
	errs := make([]error, slots)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range slots {
		wg.Go(func() {
			// Each conversation its own: a different first sentence.
			body, _ := json.Marshal(map[string]any{"prompt": fmt.Sprintf("Conversation %d. %s", i, prompt), "n_predict": g.nPredict,
				"temperature": 0, "ignore_eos": true})
			req, _ := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 {
				errs[i] = fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
				return
			}
			errs[i] = json.Unmarshal(b, &answers[i])
		})
	}
	wg.Wait()
	row.WallSeconds = time.Since(start).Seconds()
	var speeds []float64
	for i, a := range answers {
		if errs[i] != nil {
			continue
		}
		row.Succeeded++
		row.Generated += a.Timings.PredictedN
		speeds = append(speeds, a.Timings.PredictedPerSecond)
		if a.Kvtrim.PromptTokens > 0 && row.KVBytesPeak == 0 {
			perCell := a.Kvtrim.KVBytesBefore / int64(a.Kvtrim.PromptTokens)
			if comp.Policy == kvtrim.PolicySnapKV {
				row.PeakCells += a.Kvtrim.PromptTokens // the one observing context
			}
			row.KVBytesPeak = int64(row.PeakCells) * perCell
		}
	}
	if err := errors.Join(errs...); err != nil && row.Succeeded == 0 {
		return row, err
	}
	row.TokensPerSec = float64(row.Generated) / row.WallSeconds
	if len(speeds) > 0 {
		slices.Sort(speeds)
		row.DecodeTokSMed = speeds[len(speeds)/2]
	}
	return row, nil
}

// markdown is the side-by-side table.
func (r capacityReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s; %s; -c %d, conversations of %d prompt tokens + %d generated\n\n", r.Model, r.Machine, r.CtxSize, r.PromptTokens, r.Generated)
	b.WriteString("| policy | conversations | cells each | peak cells | peak KV MiB | finished | wall s | tokens/s, all | decode tok/s, each (median) |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %.1f | %d | %.1f | %.1f | %.1f |\n", row.Policy, row.Slots, row.CellsPerSlot, row.PeakCells,
			float64(row.KVBytesPeak)/(1<<20), row.Succeeded, row.WallSeconds, row.TokensPerSec, row.DecodeTokSMed)
	}
	if len(r.Rows) == 2 && r.Rows[0].Slots > 0 && r.Rows[0].PeakCells > 0 {
		full, snap := r.Rows[0], r.Rows[1]
		perCellFull := float64(full.Slots) / float64(full.PeakCells)
		perCellSnap := float64(snap.Slots) / float64(snap.PeakCells)
		fmt.Fprintf(&b, "\nconversations in the same -c: %.1fx; per peak KV memory (SnapKV's temporary context counted): %.1fx\n",
			float64(snap.Slots)/float64(full.Slots), perCellSnap/perCellFull)
	}
	return b.String()
}
