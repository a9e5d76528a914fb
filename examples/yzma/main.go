// Command yzma shows kvtrim compressing the KV cache of a context that a
// Go program made with its own llama.cpp binding, yzma
// (github.com/hybridgroup/yzma): yzma loads the library, the model and
// the context, and samples; kvtrim shares the library, puts its hook into
// yzma's context parameters, and prefills and compresses the prompt in
// yzma's context, in place.
//
//	go run . -lib DIR -m model.gguf -f prompt.txt -ratio 0.1 [-mode hook|temp|host]
//
// DIR holds libllama.so, libggml.so and libggml-base.so under those plain
// names, as yzma opens them (kvtrim's cache names them by version: link
// them, as linkLibrary does).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hybridgroup/yzma/pkg/llama"
	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// Result is what one run generated, and how many cells yzma's context
// held after the prompt.
type Result struct {
	Text              string
	PromptTokens      int
	StateBytes        uint64 // llama_state_seq_get_size of sequence 0, through yzma
	PosMin, PosMax    int32  // the sequence's positions, through yzma
	KeptCells, Budget int
	PrefillMs         float64 // decoding and compressing the prompt
}

// runner holds what yzma and kvtrim share across runs: the library and
// the model.
type runner struct {
	lib   *bindings.Library
	model llama.Model
	vocab llama.Vocab
}

// open loads the library with yzma first, as the host program does, then
// shares it with kvtrim, and loads the model with yzma.
func open(libDir, modelPath string) (*runner, error) {
	if err := llama.Load(libDir); err != nil {
		return nil, fmt.Errorf("yzma: load %s: %w", libDir, err)
	}
	llama.LogSet(llama.LogSilent())
	llama.Init()
	lib, err := bindings.Share(libDir)
	if err != nil {
		return nil, fmt.Errorf("kvtrim: %w", err)
	}
	model, err := llama.ModelLoadFromFile(modelPath, llama.ModelDefaultParams())
	if err != nil {
		return nil, fmt.Errorf("yzma: load model %s: %w", modelPath, err)
	}
	return &runner{lib: lib, model: model, vocab: llama.ModelGetVocab(model)}, nil
}

func (r *runner) close() { llama.ModelFree(r.model) }

// generate runs prompt greedily for n tokens in a context of nCtx cells
// that yzma makes; with a ratio above 0 kvtrim compresses the prompt to
// that share of it with SnapKV first.
//
// How kvtrim compresses (mode): "hook", its hook in yzma's context, where
// it prefills and compresses in place; "temp", no hook: it prefills in a
// temporary context of its own and moves the kept cells into yzma's;
// "host", no hook and yzma prefills the prompt itself: kvtrim copies the
// cells out, decodes the window again to observe it, and puts the kept
// cells back.
func (r *runner) generate(prompt string, nCtx, n int, ratio float64, mode string) (Result, error) {
	var res Result
	params := llama.ContextDefaultParams()
	params.NCtx = uint32(nCtx)
	params.NBatch = uint32(nCtx)
	var hook *kvtrim.Hook
	if ratio > 0 && mode == "hook" {
		// kvtrim's hook goes into yzma's parameters before the context exists.
		hook = kvtrim.NewHook(r.lib)
		defer hook.Close()
		params.CbEval, params.CbEvalUserData = hook.Callback, hook.UserData
	}
	ctx, err := llama.InitFromModel(r.model, params)
	if err != nil {
		return res, fmt.Errorf("yzma: make a context: %w", err)
	}
	defer llama.Free(ctx)

	tokens := llama.Tokenize(r.vocab, prompt, true, true)
	res.PromptTokens = len(tokens)
	ids := make([]kvtrim.Token, len(tokens))
	for i, t := range tokens {
		ids[i] = kvtrim.Token(t)
	}
	start := time.Now()
	if ratio == 0 || mode == "host" {
		for i := 0; i < len(tokens); i += nCtx {
			chunk := tokens[i:min(i+nCtx, len(tokens))] // n_batch is nCtx
			if _, err := llama.Decode(ctx, llama.BatchGetOne(chunk)); err != nil {
				return res, fmt.Errorf("yzma: decode the prompt: %w", err)
			}
		}
	}
	if ratio > 0 {
		opt := kvtrim.AttachOptions{Hook: hook, Compression: kvtrim.Compression{Policy: "snapkv", Ratio: ratio}}
		if mode == "host" {
			opt.Prompt = ids // what yzma decoded into sequence 0
		}
		s, err := kvtrim.Attach(r.lib, uintptr(ctx), opt)
		if err != nil {
			return res, err
		}
		if mode == "host" {
			err = s.CompressPrompt(context.Background())
		} else {
			err = s.Prefill(context.Background(), ids)
		}
		st := s.Stats()
		s.Close() // yzma's context stays, holding the kept cells
		if err != nil {
			return res, fmt.Errorf("kvtrim: %w", err)
		}
		res.KeptCells, res.Budget = st.KeptCells, st.Budget
	}
	res.PrefillMs = float64(time.Since(start).Microseconds()) / 1000

	mem, err := llama.GetMemory(ctx)
	if err != nil {
		return res, err
	}
	pmin, _ := llama.MemorySeqPosMin(mem, 0)
	pmax, _ := llama.MemorySeqPosMax(mem, 0)
	res.PosMin, res.PosMax = int32(pmin), int32(pmax)
	res.StateBytes = llama.StateSeqGetSize(ctx, 0)

	// yzma samples and decodes on; positions continue after the prompt's.
	sampler := llama.SamplerChainInit(llama.SamplerChainDefaultParams())
	defer llama.SamplerFree(sampler)
	llama.SamplerChainAdd(sampler, llama.SamplerInitGreedy())
	var out strings.Builder
	buf := make([]byte, 256)
	for range n {
		tok := llama.SamplerSample(sampler, ctx, -1)
		if llama.VocabIsEOG(r.vocab, tok) {
			break
		}
		k := llama.TokenToPiece(r.vocab, tok, buf, 0, false)
		out.Write(buf[:k])
		if _, err := llama.Decode(ctx, llama.BatchGetOne([]llama.Token{tok})); err != nil {
			return res, fmt.Errorf("yzma: decode: %w", err)
		}
	}
	res.Text = out.String()
	return res, nil
}

func main() {
	libDir := flag.String("lib", os.Getenv("YZMA_LIB"), "folder with libllama.so, libggml.so and libggml-base.so")
	modelPath := flag.String("m", "", "GGUF model")
	prompt := flag.String("p", "", "prompt")
	file := flag.String("f", "", "prompt file")
	ratio := flag.Float64("ratio", 0.1, "SnapKV keeps this share of the prompt (0: no compression)")
	nCtx := flag.Int("c", 4096, "context cells")
	n := flag.Int("n", 32, "tokens to generate")
	mode := flag.String("mode", "hook", "hook: kvtrim's hook in yzma's context; temp: no hook, kvtrim prefills in a context of its own; host: yzma prefills, kvtrim compresses after")
	flag.Parse()
	if err := run(*libDir, *modelPath, *prompt, *file, *ratio, *nCtx, *n, *mode); err != nil {
		fmt.Fprintln(os.Stderr, "yzma example:", err)
		os.Exit(1)
	}
}

func run(libDir, modelPath, prompt, file string, ratio float64, nCtx, n int, mode string) error {
	if mode != "hook" && mode != "temp" && mode != "host" {
		return fmt.Errorf("-mode %q: use hook, temp or host", mode)
	}
	if modelPath == "" {
		return errors.New("give a model with -m")
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		prompt = string(b)
	}
	r, err := open(libDir, modelPath)
	if err != nil {
		return err
	}
	defer r.close()
	res, err := r.generate(prompt, nCtx, n, ratio, mode)
	if err != nil {
		return err
	}
	fmt.Println(res.Text)
	fmt.Fprintf(os.Stderr, "prompt %d tokens, prefilled in %.0f ms; yzma's context holds positions %d..%d, %d bytes of state; kvtrim kept %d cells (budget %d)\n",
		res.PromptTokens, res.PrefillMs, res.PosMin, res.PosMax, res.StateBytes, res.KeptCells, res.Budget)
	return nil
}
