package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/internal/plot"
)

// pplConfig is one way of streaming a text: a compression, or the dense
// sliding window that recomputes its whole window (width W, stride S).
type pplConfig struct {
	Name       string `json:"config"`
	comp       kvtrim.Compression
	denseW     int
	denseS     int
	PPL        float64   `json:"ppl"`
	SegmentPPL []float64 `json:"segment_ppl"`
	Tokens     int       `json:"tokens"`
	Seconds    float64   `json:"seconds"`
}

// parsePPLConfig reads streaming:S+R, window:R (no sinks), ctxshift:K+R
// (llama.cpp's context shift: keep K, drop half the rest when full), none,
// or dense:W/S.
func parsePPLConfig(item string) (pplConfig, error) {
	kind, arg, _ := strings.Cut(item, ":")
	c := pplConfig{Name: item}
	pair := func(sep string) (int, int, error) {
		a, b, ok := strings.Cut(arg, sep)
		x, err1 := strconv.Atoi(a)
		y, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || x < 0 || y < 1 {
			return 0, 0, usageErrorf("--configs %q: want %s:A%sB with whole numbers", item, kind, sep)
		}
		return x, y, nil
	}
	switch kind {
	case "none":
		c.comp = kvtrim.Compression{Policy: kvtrim.PolicyNone}
	case "streaming", "ctxshift":
		s, r, err := pair("+")
		if err != nil {
			return c, err
		}
		c.comp = kvtrim.Compression{Policy: "streaming", Sinks: s, Recent: r}
		if kind == "ctxshift" {
			c.comp.EvictEvery = max(1, r/2)
		}
	case "window":
		r, err := strconv.Atoi(arg)
		if err != nil || r < 1 {
			return c, usageErrorf("--configs %q: want window:R", item)
		}
		c.comp = kvtrim.Compression{Policy: "streaming", Recent: r}
	case "dense":
		w, s, err := pair("/")
		if err != nil {
			return c, err
		}
		if s > w || w < 2 {
			return c, usageErrorf("--configs %q: the stride must be at most the window", item)
		}
		c.denseW, c.denseS = w, s
	default:
		return c, usageErrorf("--configs %q: use none, streaming:S+R, window:R, ctxshift:K+R or dense:W/S", item)
	}
	return c, c.comp.Check()
}

// cmdEvalPPL streams a text through the model under each configuration and
// reports perplexity overall and per segment of tokens.
func cmdEvalPPL(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("eval ppl", "eval ppl -m MODEL -f TEXT [--tokens N] [--configs LIST] [flags]")
	var c common
	var g genFlags
	chunk := fs.Int("chunk", 1, "tokens per decode (1: token by token, as the papers measure)")
	g.register(fs)
	c.register(fs)
	fs.Set("ctx-size", "0")
	nTokens := fs.Int("tokens", 20000, "tokens of the text to score")
	segment := fs.Int("segment", 2000, "tokens per reported segment")
	configs := fs.String("configs", "streaming:4+508,window:512,ctxshift:4+508,dense:512/64", "ways to stream the text (see --help)")
	out := addOutputFlags(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if g.model == "" || g.file == "" {
		return usageErrorf("eval ppl needs -m MODEL and -f TEXT")
	}
	if *nTokens < 2 || *segment < 1 || *chunk < 1 {
		return usageErrorf("--tokens, --segment and --chunk must be positive (--tokens at least 2)")
	}
	var cfgs []pplConfig
	for _, item := range strings.Split(*configs, ",") {
		cfg, err := parsePPLConfig(strings.TrimSpace(item))
		if err != nil {
			return err
		}
		cfgs = append(cfgs, cfg)
	}
	text, err := os.ReadFile(g.file)
	if err != nil {
		return fmt.Errorf("read text: %w", err)
	}
	if err := out.check(); err != nil {
		return err
	}
	log, model, err := c.openModel(ctx, &g, stderr)
	defer c.close()
	if err != nil {
		return err
	}
	defer model.Close()
	tokens, err := model.Vocab().Tokenize(string(text), true, false)
	if err != nil {
		return err
	}
	if len(tokens) < *nTokens {
		return fmt.Errorf("%s has %d tokens, fewer than --tokens %d", g.file, len(tokens), *nTokens)
	}
	tokens = tokens[:*nTokens]
	for i := range cfgs {
		start := time.Now()
		nll, err := scoreConfig(ctx, model, &cfgs[i], tokens, g, *chunk)
		if err != nil {
			return fmt.Errorf("%s: %w", cfgs[i].Name, err)
		}
		cfgs[i].Seconds = time.Since(start).Seconds()
		cfgs[i].Tokens = len(nll)
		cfgs[i].PPL = perplexity(nll)
		for s := 0; s < len(nll); s += *segment {
			cfgs[i].SegmentPPL = append(cfgs[i].SegmentPPL, perplexity(nll[s:min(s+*segment, len(nll))]))
		}
		log.Info().Msgf("%s: perplexity %.3f over %d tokens in %.0f s", cfgs[i].Name, cfgs[i].PPL, len(nll), cfgs[i].Seconds)
	}
	rep := pplReport{Task: "ppl", Model: g.model, Machine: describeMachine(model.Library()), Text: g.file, Tokens: *nTokens - 1,
		Segment: *segment, Complete: true, Configs: cfgs}
	md := rep.markdown()
	fmt.Fprint(stdout, md)
	return out.write(rep, md, rep.pictures)
}

// pplReport is what eval ppl writes with --json.
type pplReport struct {
	Task     string      `json:"task"`
	Model    string      `json:"model"`
	Machine  machine     `json:"machine"`
	Text     string      `json:"text"`
	Tokens   int         `json:"tokens"` // scored: all but the first
	Segment  int         `json:"segment"`
	Complete bool        `json:"complete"`
	Configs  []pplConfig `json:"configs"`
}

// markdown is the perplexity table, by segments of tokens.
func (r pplReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "perplexity of %s over %d tokens, by segments of %d; %s\n\n| config |", r.Text, r.Tokens, r.Segment, r.Machine)
	for s := 0; s < r.Tokens; s += r.Segment {
		fmt.Fprintf(&b, " %d-%d |", s+1, min(s+r.Segment, r.Tokens))
	}
	b.WriteString(" all | seconds |\n|---|")
	for range r.Configs[0].SegmentPPL {
		b.WriteString("---|")
	}
	b.WriteString("---|---|\n")
	for _, cfg := range r.Configs {
		fmt.Fprintf(&b, "| %s |", cfg.Name)
		for _, p := range cfg.SegmentPPL {
			fmt.Fprintf(&b, " %.3f |", p)
		}
		fmt.Fprintf(&b, " %.3f | %.0f |\n", cfg.PPL, cfg.Seconds)
	}
	return b.String()
}

// pictures draws each configuration's perplexity per segment against the
// tokens streamed.
func (r pplReport) pictures(dir string) error {
	var series []plot.Series
	for _, cfg := range r.Configs {
		s := plot.Series{Name: cfg.Name, Dashed: cfg.denseW > 0}
		for i, p := range cfg.SegmentPPL {
			s.X, s.Y = append(s.X, float64(min((i+1)*r.Segment, r.Tokens))), append(s.Y, p)
		}
		series = append(series, s)
	}
	return plot.Lines(filepath.Join(dir, "ppl-by-tokens.png"), plot.Chart{
		Title: "perplexity per segment of " + filepath.Base(r.Text), XLabel: "tokens streamed", YLabel: "perplexity", Series: series,
	})
}

// scoreConfig returns the NLL of tokens[1:] under one configuration.
func scoreConfig(ctx context.Context, model *kvtrim.Model, cfg *pplConfig, tokens []kvtrim.Token, g genFlags, chunk int) ([]float64, error) {
	threads := max(g.threads, 0)
	opt := kvtrim.SessionOptions{NCtx: g.nCtx, NBatch: g.nBatch, NUbatch: g.nUbat, Threads: threads, FlashAttn: g.flashAttn, Compression: cfg.comp}
	if cfg.denseW > 0 {
		opt.NCtx = cfg.denseW
	} else if opt.NCtx == 0 && cfg.comp.AnyPromptLength() {
		opt.NCtx = cfg.comp.DecodeCells() + 16
	} else if opt.NCtx == 0 {
		opt.NCtx = len(tokens)
	}
	s, err := model.NewSession(opt)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if cfg.denseW == 0 {
		return s.Score(ctx, tokens, chunk)
	}
	// The dense baseline: every stride, the whole window is recomputed
	// from an empty cache, and its last stride tokens are scored.
	var nll []float64
	for end := min(cfg.denseW, len(tokens)); ; end += cfg.denseS {
		end = min(end, len(tokens))
		s.Reset()
		w, err := s.Score(ctx, tokens[max(0, end-cfg.denseW):end], cfg.denseW)
		if err != nil {
			return nil, err
		}
		if len(nll) == 0 {
			nll = w // the first window is scored whole
		} else {
			nll = append(nll, w[len(w)-(end-1-len(nll)):]...)
		}
		if end == len(tokens) {
			return nll, nil
		}
	}
}

func perplexity(nll []float64) float64 {
	sum := 0.0
	for _, v := range nll {
		sum += v
	}
	return math.Exp(sum / float64(len(nll)))
}
