package kvtrim_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/internal/testenv"
)

// BenchmarkGroupDecode measures generation speed side by side: one session
// of its own, one group member alone (the group's hand-off cost), four
// members generating at once (what batching their steps into one
// llama_decode gains), and four in a group that observes its context
// (made with a prompt policy, as a compressing server's: what the eval
// callback costs every decode, watching nothing), at 1 and 2 threads. tok/s counts all the
// sequences' generated tokens over the wall time; seq/decode is the
// members' requests per llama_decode. The model is $KVTRIM_BENCH_MODEL (a
// GGUF file) or the bundled stories260K:
//
//	KVTRIM_BENCH_MODEL=/tmp/r125m.gguf go test -run XXX -bench GroupDecode -benchtime 3x .
func BenchmarkGroupDecode(b *testing.B) {
	var m *kvtrim.Model
	if path := os.Getenv("KVTRIM_BENCH_MODEL"); path != "" {
		var err error
		if m, err = kvtrim.LoadModel(testenv.Library(b), path, kvtrim.ModelOptions{}, testenv.Logger()); err != nil {
			b.Fatal(err)
		}
		defer m.Close()
	} else {
		m = loadModel(b, "stories260K.gguf")
	}
	const tokens, ctxCells = 128, 512
	// generate prefills a short prompt into s and generates the tokens.
	generate := func(s *kvtrim.Session, i int) error {
		toks, err := s.Tokenize(fmt.Sprintf("Once upon a time, story %d:", i))
		if err != nil {
			return err
		}
		if err := s.Prefill(context.Background(), toks); err != nil {
			return err
		}
		sampler := m.Library().NewSampler(bindings.SamplerOptions{Temp: 0})
		defer sampler.Close()
		return s.Generate(context.Background(), sampler, kvtrim.GenerateOptions{MaxTokens: tokens, IgnoreEOS: true},
			func(kvtrim.Token, string) error { return nil })
	}
	for _, threads := range []int{1, 2} {
		opt := kvtrim.SessionOptions{NCtx: ctxCells, Threads: threads}
		b.Run(fmt.Sprintf("t%d/standalone", threads), func(b *testing.B) {
			var elapsed time.Duration
			for b.Loop() {
				s, err := m.NewSession(opt)
				if err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				err = generate(s, 0)
				elapsed += time.Since(t0)
				s.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(tokens*b.N)/elapsed.Seconds(), "tok/s")
		})
		for _, n := range []int{1, 4, -4} {
			name := fmt.Sprintf("t%d/group-%d", threads, n)
			gopt := opt
			if n < 0 {
				n, name = -n, fmt.Sprintf("t%d/group-%d-observing", threads, -n)
				gopt.Compression = kvtrim.Compression{Policy: kvtrim.PolicySnapKV, Ratio: 0.1}
			}
			b.Run(name, func(b *testing.B) {
				gopt.NCtx = ctxCells * n
				g, err := m.NewGroup(gopt, n)
				if err != nil {
					b.Fatal(err)
				}
				defer g.Close()
				var elapsed time.Duration
				for b.Loop() {
					sessions := make([]*kvtrim.Session, n)
					for i := range sessions {
						if sessions[i], err = g.NewSession(i, kvtrim.Compression{}); err != nil {
							b.Fatal(err)
						}
					}
					errs := make([]error, n)
					var wg sync.WaitGroup
					t0 := time.Now()
					for i, s := range sessions {
						wg.Go(func() { errs[i] = generate(s, i) })
					}
					wg.Wait()
					elapsed += time.Since(t0)
					for i, s := range sessions {
						s.Close()
						if errs[i] != nil {
							b.Fatal(errs[i])
						}
					}
				}
				st := g.Stats()
				b.ReportMetric(float64(tokens*n*b.N)/elapsed.Seconds(), "tok/s")
				b.ReportMetric(float64(st.Parts)/float64(st.Rounds), "seq/decode")
			})
		}
	}
}
