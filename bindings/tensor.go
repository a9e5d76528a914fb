package bindings

import (
	"fmt"
	"sync"
	"unsafe"
)

// Tensor is a read-only view of a ggml_tensor that llama.cpp handed to the
// eval callback. A graph node is valid only during that callback; the KV
// cache's own tensors (cache_k_l<il>, cache_v_l<il>, reached as sources of
// nodes) live as long as their context, so a Tensor of one may be kept.
type Tensor struct {
	lib *Library
	t   *cTensor
}

// Name is the tensor's name, e.g. "kq_soft_max-3".
func (t Tensor) Name() string {
	n := 0
	for n < len(t.t.Name) && t.t.Name[n] != 0 {
		n++
	}
	return string(t.t.Name[:n])
}

// Type is the element type (enum ggml_type: 0 F32, 1 F16, ...).
func (t Tensor) Type() int32 { return t.t.Type }

// TypeName is ggml's name of the element type.
func (t Tensor) TypeName() string { return t.lib.fn.ggmlTypeName(t.t.Type) }

// Op is the operation that computes the tensor (enum ggml_op).
func (t Tensor) Op() int32 { return t.t.Op }

// OpName is ggml's name of the operation, e.g. "SOFT_MAX".
func (t Tensor) OpName() string { return t.lib.fn.ggmlOpName(t.t.Op) }

// Ne is the number of elements along each of the four dimensions.
func (t Tensor) Ne() [4]int64 { return t.t.Ne }

// Nb is the stride in bytes along each dimension.
func (t Tensor) Nb() [4]uint64 { return t.t.Nb }

// Src returns source i, if it exists.
func (t Tensor) Src(i int) (Tensor, bool) {
	if i < 0 || i >= len(t.t.Src) || t.t.Src[i] == nil {
		return Tensor{}, false
	}
	return Tensor{lib: t.lib, t: t.t.Src[i]}, true
}

// ViewSrc is the tensor this one is a view of (a reshape, a view), if it
// is one: a persistent tensor behind a graph's transient view of it.
func (t Tensor) ViewSrc() (Tensor, bool) {
	if t.t.ViewSrc == nil {
		return Tensor{}, false
	}
	return Tensor{lib: t.lib, t: t.t.ViewSrc}, true
}

// Read copies size bytes at offset from the tensor's data into dst, from host
// or device memory alike (ggml_backend_tensor_get).
func (t Tensor) Read(dst []byte, offset uint64) error {
	if len(dst) == 0 {
		return nil
	}
	end := offset + uint64(len(dst))
	if total := t.t.Nb[3] * uint64(t.t.Ne[3]); end > total {
		return fmt.Errorf("read tensor %s: bytes [%d, %d) past its end %d", t.Name(), offset, end, total)
	}
	t.lib.fn.ggmlBackendTensorGet(uintptr(unsafe.Pointer(t.t)), unsafe.Pointer(&dst[0]), offset, uint64(len(dst)))
	return nil
}

// HostF16 is the tensor's elements, as raw F16 values, in place: a view of
// llama.cpp's memory, not a copy, when the tensor is F16, contiguous and in
// a host buffer (the CPU backend's); ok is false otherwise, and ReadTensor
// copies instead. The view is valid as long as the tensor's memory is (a
// KV cache tensor's: its context's life) and changes with every decode, so
// read it only between decodes.
func (t Tensor) HostF16() (view []uint16, ok bool) {
	c := t.t
	const f16 = 1 // GGML_TYPE_F16
	if c == nil || c.Type != f16 || c.Data == nil || c.Buffer == 0 || !t.lib.fn.ggmlBackendBufferIsHost(c.Buffer) {
		return nil, false
	}
	n := uint64(1)
	for d := range ggmlMaxDims {
		if c.Nb[d] != n*2 {
			return nil, false // not contiguous
		}
		n *= uint64(c.Ne[d])
	}
	return unsafe.Slice((*uint16)(c.Data), n), true
}

// Element is a Go type a tensor's elements can be read into.
type Element interface {
	float32 | int32 | int64 | uint16
}

// ReadTensor copies len(dst) elements starting byteOffset bytes into t's
// data, from host or device memory alike. The caller matches T to the
// tensor's type (F32, I32, I64, or F16 read as raw uint16).
func ReadTensor[T Element](t Tensor, dst []T, byteOffset uint64) error {
	if len(dst) == 0 {
		return nil
	}
	size := uint64(len(dst)) * uint64(unsafe.Sizeof(dst[0]))
	return t.Read(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), size), byteOffset)
}

// EvalObserver watches graph nodes while a context decodes. Ask is called for
// every node and says whether to see it computed; Observe then receives each
// node it asked for, once computed. Both run on the decoding thread. Observe
// returning false aborts the decode.
type EvalObserver interface {
	Ask(t Tensor) bool
	Observe(t Tensor) bool
}

// evalRegistry dispatches llama.cpp's one eval callback to observers by the
// user_data each context was given.
type evalRegistry struct {
	mu   sync.Mutex
	next uintptr
	obs  map[uintptr]EvalObserver
	cb   uintptr
}

// EvalCallback registers o and returns the callback and user data to put in
// ContextOptions, and a function that unregisters o once its context is
// closed. The C callback itself is made once per process.
func (l *Library) EvalCallback(o EvalObserver) (cb, user uintptr, release func()) {
	r := &l.eval
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cb == 0 {
		r.obs = map[uintptr]EvalObserver{}
		r.cb = newEvalCallback(l)
	}
	r.next++
	id := r.next
	r.obs[id] = o
	return r.cb, id, func() {
		r.mu.Lock()
		delete(r.obs, id)
		r.mu.Unlock()
	}
}

func newEvalCallback(l *Library) uintptr {
	return puregoCallback(func(t *cTensor, ask bool, user uintptr) bool {
		l.eval.mu.Lock()
		o := l.eval.obs[user]
		l.eval.mu.Unlock()
		if o == nil {
			return !ask // see nothing, abort nothing
		}
		tt := Tensor{lib: l, t: t}
		if ask {
			return o.Ask(tt)
		}
		return o.Observe(tt)
	})
}
