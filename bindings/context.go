package bindings

import (
	"errors"
	"fmt"
	"reflect"
	"unsafe"
)

// ContextOptions are the context settings kvtrim exposes (llama.cpp's own
// defaults apply where a field is zero, except as noted).
type ContextOptions struct {
	NCtx      uint32    // cache size in cells (0: the model's n_ctx_train)
	NBatch    uint32    // largest batch llama_decode accepts (0: llama.cpp default)
	NUbatch   uint32    // physical batch (0: llama.cpp default)
	NSeqMax   uint32    // sequences (0: 1)
	Threads   int32     // decode threads (0: llama.cpp default)
	ThreadsB  int32     // batch threads (0: same as Threads)
	FlashAttn FlashAttn // FlashAttnAuto, FlashAttnEnabled or FlashAttnDisabled
	NoPerf    bool      // skip llama.cpp's own timings
	// CacheTypeK and CacheTypeV are the KV cache's element types (ggml
	// types; zero value: llama.cpp's F16). Use CacheF32 for exact tests.
	CacheTypeK, CacheTypeV GGMLType
	// EvalCallback, if set, observes graph nodes during decoding (see
	// Library.EvalCallback). It is fixed for the life of the context.
	EvalCallback uintptr
	EvalUserData uintptr
}

// GGMLType is a KV cache element type. Its zero value means llama.cpp's
// default (F16).
type GGMLType int32

// Cache element types.
const (
	CacheF16 GGMLType = iota + 1
	CacheF32
)

// ggml returns enum ggml_type's number.
func (t GGMLType) ggml() int32 {
	if t == CacheF32 {
		return 0 // GGML_TYPE_F32
	}
	return 1 // GGML_TYPE_F16
}

// Context is a llama.cpp inference context: the KV cache and the compute
// graph around a model. It is not safe for concurrent use.
type Context struct {
	lib   *Library
	ptr   uintptr
	model *Model
	mem   *Memory
	// borrowed: another binding made it, and frees it (Library.Borrow).
	borrowed bool
}

// NewContext creates a context over m.
func (m *Model) NewContext(opt ContextOptions) (*Context, error) {
	l := m.lib
	p, raw, err := l.params.contextParams()
	if err != nil {
		return nil, fmt.Errorf("create context for %s: %w", m.Path, err)
	}
	if opt.NCtx > 0 {
		p.NCtx = opt.NCtx
	} else {
		p.NCtx = 0 // from the model
	}
	if opt.NBatch > 0 {
		p.NBatch = opt.NBatch
	}
	if opt.NUbatch > 0 {
		p.NUbatch = opt.NUbatch
	}
	if p.NUbatch > p.NBatch {
		p.NUbatch = p.NBatch
	}
	if opt.NSeqMax > 0 {
		p.NSeqMax = opt.NSeqMax
	}
	if opt.Threads > 0 {
		p.NThreads = opt.Threads
		p.NThreadsBatch = opt.Threads
	}
	if opt.ThreadsB > 0 {
		p.NThreadsBatch = opt.ThreadsB
	}
	p.FlashAttnType = opt.FlashAttn
	p.NoPerf = opt.NoPerf
	if opt.CacheTypeK != 0 {
		p.TypeK = int32(opt.CacheTypeK.ggml())
	}
	if opt.CacheTypeV != 0 {
		p.TypeV = int32(opt.CacheTypeV.ggml())
	}
	p.CbEval = opt.EvalCallback
	p.CbEvalUserData = opt.EvalUserData
	if err := l.params.context.encode(raw, p); err != nil {
		return nil, fmt.Errorf("create context for %s: %w", m.Path, err)
	}
	ptr, llamaErr := withLlamaError(l, func() uintptr { return invoke(l.params.initContext, reflect.ValueOf(m.ptr), raw) })
	if ptr == 0 {
		return nil, errors.New(quoteLlama(fmt.Sprintf("create context for %s (n_ctx %d, n_batch %d): llama.cpp refused", m.Path, p.NCtx, p.NBatch), llamaErr))
	}
	return l.wrapContext(ptr, m, false), nil
}

// wrapContext makes the Context of a llama_context * over m: kvtrim's
// own, or borrowed from another binding (never freed).
func (l *Library) wrapContext(ptr uintptr, m *Model, borrowed bool) *Context {
	c := &Context{lib: l, ptr: ptr, model: m, borrowed: borrowed}
	c.mem = &Memory{lib: l, ptr: l.fn.llamaGetMemory(ptr)}
	return c
}

// Close frees the context and its cache.
func (c *Context) Close() {
	if c == nil || c.ptr == 0 {
		return
	}
	if c.borrowed {
		c.lib.unborrow(c.ptr)
	} else {
		c.lib.fn.llamaFree(c.ptr)
	}
	c.ptr = 0
}

// Borrow wraps a context another binding made with this library (a
// llama_context * as a number), and its model, without taking them over:
// closing the wrapper frees neither. A context can be borrowed once at a
// time.
func (l *Library) Borrow(ctx uintptr) (*Context, error) {
	if ctx == 0 {
		return nil, errors.New("borrow a llama.cpp context: the handle is 0 (no context)")
	}
	l.borrowedMu.Lock()
	defer l.borrowedMu.Unlock()
	if l.borrowed[ctx] {
		return nil, fmt.Errorf("borrow the llama.cpp context %#x: it is already attached; close that attachment first", ctx)
	}
	mptr := l.fn.llamaGetModel(ctx)
	if mptr == 0 {
		return nil, fmt.Errorf("borrow the llama.cpp context %#x: it has no model", ctx)
	}
	if l.borrowed == nil {
		l.borrowed = map[uintptr]bool{}
	}
	l.borrowed[ctx] = true
	return l.wrapContext(ctx, l.wrapModel(mptr, "", true), true), nil
}

// unborrow forgets a borrowed context.
func (l *Library) unborrow(ctx uintptr) {
	l.borrowedMu.Lock()
	delete(l.borrowed, ctx)
	l.borrowedMu.Unlock()
}

// Handle is the context's llama_context * as a number, for another binding
// that shares the library.
func (c *Context) Handle() uintptr { return c.ptr }

// Borrowed reports whether the context belongs to another binding.
func (c *Context) Borrowed() bool { return c.borrowed }

// Model returns the model the context was made from.
func (c *Context) Model() *Model { return c.model }

// Ptr is the llama_context pointer, for code that attaches to a context
// another binding made.
func (c *Context) Ptr() uintptr { return c.ptr }

// NCtx is the cache size in cells.
func (c *Context) NCtx() int { return int(c.lib.fn.llamaNCtx(c.ptr)) }

// NBatch is the largest batch Decode accepts.
func (c *Context) NBatch() int { return int(c.lib.fn.llamaNBatch(c.ptr)) }

// NUbatch is the physical batch size.
func (c *Context) NUbatch() int { return int(c.lib.fn.llamaNUbatch(c.ptr)) }

// NSeqMax is the number of sequences the context holds.
func (c *Context) NSeqMax() int { return int(c.lib.fn.llamaNSeqMax(c.ptr)) }

// SetThreads sets the decode and batch thread counts.
func (c *Context) SetThreads(n, nBatch int) {
	c.lib.fn.llamaSetNThreads(c.ptr, int32(n), int32(nBatch))
}

// Threads returns the decode and batch thread counts.
func (c *Context) Threads() (n, nBatch int) {
	return int(c.lib.fn.llamaNThreads(c.ptr)), int(c.lib.fn.llamaNThreadsBatch(c.ptr))
}

// Memory returns the context's KV memory.
func (c *Context) Memory() *Memory { return c.mem }

// DecodeError is a non-zero status from llama_decode.
type DecodeError struct{ Code int32 }

func (e *DecodeError) Error() string {
	switch e.Code {
	case 1:
		return "llama_decode: no free cell in the KV cache for the batch (the cache is full: raise -c or compress)"
	case 2:
		return "llama_decode: aborted"
	case -1:
		return "llama_decode: invalid batch (positions or sequence ids do not follow the cache)"
	}
	return fmt.Sprintf("llama_decode: failed with status %d", e.Code)
}

// Decode runs the model over a batch.
func (c *Context) Decode(b *Batch) error {
	if b.n == 0 {
		return errors.New("llama_decode: empty batch")
	}
	b.c.NTokens = int32(b.n)
	if rc := c.lib.fn.llamaDecode(c.ptr, b.c); rc != 0 {
		return &DecodeError{Code: rc}
	}
	return nil
}

// Logits returns the logits of output i of the last decoded batch (the
// index of a token whose Output flag was set, or -1 for the last one). The
// slice points into llama.cpp's memory and is valid until the next Decode.
func (c *Context) Logits(i int) []float32 {
	p := c.lib.fn.llamaGetLogitsIth(c.ptr, int32(i))
	if p == nil {
		return nil
	}
	return unsafe.Slice(p, c.model.vocab.NTokens())
}

// Perf returns llama.cpp's own timings of this context.
func (c *Context) Perf() PerfContext { return c.lib.fn.llamaPerfContext(c.ptr) }

// ResetPerf zeroes llama.cpp's timings.
func (c *Context) ResetPerf() { c.lib.fn.llamaPerfContextReset(c.ptr) }
