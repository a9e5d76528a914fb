package bindings

// SamplerOptions configure a sampler chain. Temp <= 0 means greedy.
type SamplerOptions struct {
	Temp float32
	TopK int32   // 0: off
	TopP float32 // 1: off
	MinP float32 // 0: off
	Seed uint32
}

// Sampler is a llama.cpp sampler chain.
type Sampler struct {
	lib *Library
	ptr uintptr
}

// NewSampler builds a chain in llama.cpp's usual order: top-k, top-p, min-p,
// temperature, then a seeded draw; or greedy when Temp <= 0.
func (l *Library) NewSampler(o SamplerOptions) *Sampler {
	f := l.fn
	chain := f.llamaSamplerChainInit(f.llamaSamplerChainDefaultParams())
	if o.Temp <= 0 {
		f.llamaSamplerChainAdd(chain, f.llamaSamplerInitGreedy())
		return &Sampler{lib: l, ptr: chain}
	}
	if o.TopK > 0 {
		f.llamaSamplerChainAdd(chain, f.llamaSamplerInitTopK(o.TopK))
	}
	if o.TopP > 0 && o.TopP < 1 {
		f.llamaSamplerChainAdd(chain, f.llamaSamplerInitTopP(o.TopP, 1))
	}
	if o.MinP > 0 {
		f.llamaSamplerChainAdd(chain, f.llamaSamplerInitMinP(o.MinP, 1))
	}
	f.llamaSamplerChainAdd(chain, f.llamaSamplerInitTemp(o.Temp))
	f.llamaSamplerChainAdd(chain, f.llamaSamplerInitDist(o.Seed))
	return &Sampler{lib: l, ptr: chain}
}

// Sample picks a token from output idx of ctx's last decode (-1: the last
// output) and accepts it into the chain's state.
func (s *Sampler) Sample(ctx *Context, idx int) Token {
	return s.lib.fn.llamaSamplerSample(s.ptr, ctx.ptr, int32(idx))
}

// Accept records a token chosen outside Sample.
func (s *Sampler) Accept(t Token) { s.lib.fn.llamaSamplerAccept(s.ptr, t) }

// Reset clears the chain's state (and reseeds nothing).
func (s *Sampler) Reset() { s.lib.fn.llamaSamplerReset(s.ptr) }

// Close frees the chain and the samplers in it.
func (s *Sampler) Close() {
	if s.ptr != 0 {
		s.lib.fn.llamaSamplerFree(s.ptr)
		s.ptr = 0
	}
}
