package main

import (
	"strings"

	"github.com/spf13/pflag"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/internal/server"
)

// sampling is serve's flags for llama-server's other samplers: the
// requests' defaults, as llama-server's flags of the same names set them.
type sampling struct {
	topNSigma, typicalP, xtcProbability, xtcThreshold float32
	dynatempRange, dynatempExp                        float32
	dryMultiplier, dryBase                            float32
	dryAllowedLength, dryPenaltyLastN                 int
	dryBreakers                                       []string
	mirostat                                          int
	mirostatLR, mirostatEnt                           float32
	samplers, sequence                                string
}

func (s *sampling) register(fs *pflag.FlagSet) {
	d := server.DefaultSampling()
	fs.Float32Var(&s.topNSigma, "top-n-sigma", d.TopNSigma, "default top-n-sigma (-1: off; --top-nsigma)")
	fs.Float32Var(&s.typicalP, "typical", d.TypicalP, "default locally typical sampling p (1: off; --typical-p)")
	fs.Float32Var(&s.xtcProbability, "xtc-probability", d.XTCProbability, "default XTC probability (0: off)")
	fs.Float32Var(&s.xtcThreshold, "xtc-threshold", d.XTCThreshold, "default XTC threshold (above 0.5: off)")
	fs.Float32Var(&s.dynatempRange, "dynatemp-range", d.DynatempRange, "default dynamic temperature range (0: off)")
	fs.Float32Var(&s.dynatempExp, "dynatemp-exp", d.DynatempExponent, "default dynamic temperature exponent")
	fs.Float32Var(&s.dryMultiplier, "dry-multiplier", d.DRYMultiplier, "default DRY multiplier (0: off)")
	fs.Float32Var(&s.dryBase, "dry-base", d.DRYBase, "default DRY base")
	fs.IntVar(&s.dryAllowedLength, "dry-allowed-length", d.DRYAllowedLength, "default DRY allowed length")
	fs.IntVar(&s.dryPenaltyLastN, "dry-penalty-last-n", d.DRYPenaltyLastN, "default tokens DRY scans (0: off, -1: the context)")
	fs.StringArrayVar(&s.dryBreakers, "dry-sequence-breaker", nil, `DRY sequence breaker, repeatable; replaces the defaults ("none": no breakers)`)
	fs.IntVar(&s.mirostat, "mirostat", d.Mirostat, "default Mirostat (0: off, 1 or 2)")
	fs.Float32Var(&s.mirostatLR, "mirostat-lr", d.MirostatEta, "default Mirostat learning rate (eta)")
	fs.Float32Var(&s.mirostatEnt, "mirostat-ent", d.MirostatTau, "default Mirostat target entropy (tau)")
	fs.StringVar(&s.samplers, "samplers", "", "default sampler order, names separated by ';' (e.g. penalties;top_k;temperature)")
	fs.StringVar(&s.sequence, "sampling-seq", "", "default sampler order as letters (e.g. edskypmxt; --sampler-seq)")
}

// breakers is the DRY sequence breakers the flags give: the defaults
// without any, none for "none".
func (s *sampling) breakers() []string {
	switch {
	case len(s.dryBreakers) == 0:
		return server.DefaultSampling().DRYBreakers
	case len(s.dryBreakers) == 1 && s.dryBreakers[0] == "none":
		return []string{}
	}
	return s.dryBreakers
}

// order is the sampler order the flags give, nil for llama-server's.
func (s *sampling) order() ([]bindings.SamplerKind, error) {
	var names []string
	switch {
	case s.samplers != "":
		names = strings.Split(s.samplers, ";")
	case s.sequence != "":
		names = server.SamplerLetters(s.sequence)
	default:
		return nil, nil
	}
	order, err := server.SamplerOrder(names)
	if err != nil {
		return nil, usageErrorf("--samplers, --sampling-seq: %v", err)
	}
	return order, nil
}
