package bindings

import (
	"runtime"
	"unsafe"
)

// SamplerKind names one sampler of a chain, as llama-server's "samplers"
// field and --samplers name them.
type SamplerKind string

// The samplers a chain orders.
const (
	SamplerPenalties   SamplerKind = "penalties"
	SamplerDRY         SamplerKind = "dry"
	SamplerTopNSigma   SamplerKind = "top_n_sigma"
	SamplerTopK        SamplerKind = "top_k"
	SamplerTypicalP    SamplerKind = "typ_p"
	SamplerTopP        SamplerKind = "top_p"
	SamplerMinP        SamplerKind = "min_p"
	SamplerXTC         SamplerKind = "xtc"
	SamplerTemperature SamplerKind = "temperature"
)

// DefaultOrder is llama-server's order of the samplers.
var DefaultOrder = []SamplerKind{
	SamplerPenalties, SamplerDRY, SamplerTopNSigma, SamplerTopK, SamplerTypicalP,
	SamplerTopP, SamplerMinP, SamplerXTC, SamplerTemperature,
}

// chain builds o's llama.cpp sampler chain (see NewSampler).
func (l *Library) chain(o SamplerOptions) uintptr {
	f := l.fn
	chain := f.llamaSamplerChainInit(f.llamaSamplerChainDefaultParams())
	add := func(s uintptr) {
		if s != 0 {
			f.llamaSamplerChainAdd(chain, s)
		}
	}
	if len(o.LogitBias) > 0 {
		// llama.cpp copies the biases.
		add(f.llamaSamplerInitLogitBias(o.NVocab, int32(len(o.LogitBias)), &o.LogitBias[0]))
	}
	switch o.Mirostat {
	case 1:
		add(f.llamaSamplerInitTemp(o.Temp))
		add(f.llamaSamplerInitMirostat(o.NVocab, o.Seed, o.MirostatTau, o.MirostatEta, 100))
		return chain
	case 2:
		add(f.llamaSamplerInitTemp(o.Temp))
		add(f.llamaSamplerInitMirostatV2(o.Seed, o.MirostatTau, o.MirostatEta))
		return chain
	}
	order := o.Order
	if order == nil {
		order = DefaultOrder
	}
	minKeep := uint64(max(0, o.MinKeep))
	for _, kind := range order {
		add(l.sampler(kind, o, minKeep))
	}
	if o.Temp <= 0 {
		add(f.llamaSamplerInitGreedy())
	} else {
		add(f.llamaSamplerInitDist(o.Seed))
	}
	return chain
}

// sampler makes one sampler of the chain, or 0 when its settings leave
// it out (or, for the temperature, when the chain ends in greedy).
func (l *Library) sampler(kind SamplerKind, o SamplerOptions, minKeep uint64) uintptr {
	f := l.fn
	switch kind {
	case SamplerPenalties:
		if o.penalizes() {
			repeat := o.RepeatPenalty
			if repeat == 0 {
				repeat = 1
			}
			if l.Release.LegacySamplers {
				return f.llamaSamplerInitPenaltiesLegacy(o.PenaltyLastN, repeat, o.FrequencyPenalty, o.PresencePenalty)
			}
			return f.llamaSamplerInitPenalties(o.NVocab, o.PenaltyLastN, repeat, o.FrequencyPenalty, o.PresencePenalty)
		}
	case SamplerDRY:
		if o.DRYMultiplier != 0 && o.DRYPenaltyLastN != 0 && o.Vocab != nil {
			return l.dry(o)
		}
	case SamplerTopNSigma:
		if o.TopNSigma > 0 {
			return f.llamaSamplerInitTopNSigma(o.TopNSigma)
		}
	case SamplerTopK:
		if o.TopK > 0 {
			return f.llamaSamplerInitTopK(o.TopK)
		}
	case SamplerTypicalP:
		if o.TypicalP > 0 && o.TypicalP < 1 {
			return f.llamaSamplerInitTypical(o.TypicalP, minKeep)
		}
	case SamplerTopP:
		if o.TopP > 0 && o.TopP < 1 {
			return f.llamaSamplerInitTopP(o.TopP, minKeep)
		}
	case SamplerMinP:
		if o.MinP > 0 {
			return f.llamaSamplerInitMinP(o.MinP, minKeep)
		}
	case SamplerXTC:
		if o.XTCProbability > 0 {
			return f.llamaSamplerInitXTC(o.XTCProbability, o.XTCThreshold, minKeep, o.Seed)
		}
	case SamplerTemperature:
		switch {
		case o.Temp <= 0:
		case o.DynatempRange > 0:
			return f.llamaSamplerInitTempExt(o.Temp, o.DynatempRange, o.DynatempExponent)
		default:
			return f.llamaSamplerInitTemp(o.Temp)
		}
	}
	return 0
}

// dry makes the DRY sampler, whose sequence breakers go to C as an array
// of C strings.
func (l *Library) dry(o SamplerOptions) uintptr {
	strs := make([]*byte, len(o.DRYBreakers))
	for i, b := range o.DRYBreakers {
		strs[i] = cString(b)
	}
	var first **byte
	if len(strs) > 0 {
		first = &strs[0]
	}
	var s uintptr
	if l.Release.LegacySamplers {
		// Its n_ctx_train only stands in for a last-n of -1 and caps the
		// last-n, which kvtrim always gives: the last-n is as good.
		s = l.fn.llamaSamplerInitDRYLegacy(o.Vocab.ptr, o.DRYPenaltyLastN, o.DRYMultiplier, o.DRYBase, o.DRYAllowedLength, o.DRYPenaltyLastN, unsafe.Pointer(first), uint64(len(strs)))
	} else {
		s = l.fn.llamaSamplerInitDRY(o.Vocab.ptr, o.DRYMultiplier, o.DRYBase, o.DRYAllowedLength, o.DRYPenaltyLastN, unsafe.Pointer(first), uint64(len(strs)))
	}
	runtime.KeepAlive(strs) // llama.cpp copies the breakers
	return s
}
