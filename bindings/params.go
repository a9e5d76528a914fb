package bindings

import (
	"fmt"
	"reflect"
	"runtime"
	"unsafe"

	"github.com/ebitengine/purego"
)

// paramCalls are the calls that take or return llama_model_params and
// llama_context_params, the structs whose layout changes from release to
// release. Rather than one Go mirror per release, kvtrim keeps one Go form
// of each (ModelParams, ContextParams) and moves it in and out of the C
// bytes by the release's layout table. The bytes start as the release's
// defaults, so fields kvtrim has no name for (an older release's use_mmap)
// keep their default values.
type paramCalls struct {
	model, context *cStruct
	// modelDefaults and contextDefaults are the default-params functions,
	// called with the hidden result pointer of the System V ABI.
	modelDefaults, contextDefaults uintptr
	// loadModel is func(*byte, <model params>) uintptr and initContext
	// func(uintptr, <context params>) uintptr, each made for the release's
	// struct size.
	loadModel, initContext reflect.Value
}

// probeSize is the sentinel buffer a default-params call writes into:
// larger than any release's struct, so that a larger one shows.
const probeSize = 512

// probeByte fills the sentinel buffer; the calls write only their fields.
const probeByte = 0xA5

// newParamCalls binds the parameter calls of a release with layout l.
func newParamCalls(llama uintptr, l layout) (*paramCalls, error) {
	p := &paramCalls{model: l.structs["llama_model_params"], context: l.structs["llama_context_params"]}
	if p.model == nil || p.context == nil {
		return nil, fmt.Errorf("layout table lacks llama_model_params or llama_context_params")
	}
	if err := p.model.checkParams(reflect.TypeFor[ModelParams]()); err != nil {
		return nil, err
	}
	if err := p.context.checkParams(reflect.TypeFor[ContextParams]()); err != nil {
		return nil, err
	}
	for _, s := range []struct {
		name string
		sym  *uintptr
	}{{"llama_model_default_params", &p.modelDefaults}, {"llama_context_default_params", &p.contextDefaults}} {
		sym, err := lookup(llama, s.name)
		if err != nil {
			return nil, err
		}
		*s.sym = sym
	}
	var err error
	if p.loadModel, err = paramFunc(llama, "llama_model_load_from_file", reflect.TypeFor[*byte](), p.model); err != nil {
		return nil, err
	}
	if p.initContext, err = paramFunc(llama, "llama_init_from_model", reflect.TypeFor[uintptr](), p.context); err != nil {
		return nil, err
	}
	return p, nil
}

// paramFunc binds a function taking (first, struct s by value) and
// returning a pointer, with a Go struct type exactly s's size.
func paramFunc(llama uintptr, name string, first reflect.Type, s *cStruct) (reflect.Value, error) {
	sym, err := lookup(llama, name)
	if err != nil {
		return reflect.Value{}, err
	}
	ft := reflect.FuncOf([]reflect.Type{first, wireType(s)}, []reflect.Type{reflect.TypeFor[uintptr]()}, false)
	fn := reflect.New(ft)
	purego.RegisterFunc(fn.Interface(), sym)
	return fn.Elem(), nil
}

// wireType is a Go struct of s's size, words only: purego copies a struct
// this large onto the stack as it lies in memory, as the ABI passes it.
func wireType(s *cStruct) reflect.Type {
	return reflect.StructOf([]reflect.StructField{{Name: "Words", Type: reflect.ArrayOf(int(s.Size/8), reflect.TypeFor[uint64]())}})
}

// defaults calls a default-params function into a sentinel buffer and
// checks it wrote exactly the release's fields: no byte past the last
// field's end, and that last byte. It returns the struct's bytes.
func defaults(fn uintptr, s *cStruct) ([]byte, error) {
	buf := make([]byte, probeSize)
	for i := range buf {
		buf[i] = probeByte
	}
	purego.SyscallN(fn, uintptr(unsafe.Pointer(&buf[0])))
	runtime.KeepAlive(buf)
	last := -1
	for i := len(buf) - 1; i >= 0; i-- {
		if buf[i] != probeByte {
			last = i
			break
		}
	}
	if last+1 != int(s.end) {
		return nil, fmt.Errorf("its default %s fills %d bytes, this release's fields end at %d", s.Name, last+1, s.end)
	}
	return buf[:s.Size:s.Size], nil
}

// defaultParams returns a release's default parameters (T is ModelParams
// or ContextParams) from the default-params function fn, and the C bytes
// they came from.
func defaultParams[T any](fn uintptr, s *cStruct) (T, []byte, error) {
	var params T
	raw, err := defaults(fn, s)
	if err == nil {
		s.decode(raw, &params)
	}
	return params, raw, err
}

// modelParams returns the release's default model parameters and their bytes.
func (p *paramCalls) modelParams() (ModelParams, []byte, error) {
	return defaultParams[ModelParams](p.modelDefaults, p.model)
}

// contextParams returns the release's default context parameters and
// their bytes.
func (p *paramCalls) contextParams() (ContextParams, []byte, error) {
	return defaultParams[ContextParams](p.contextDefaults, p.context)
}

// invoke calls fn(first, the struct whose bytes are raw): raw holds the
// release's defaults with the caller's parameters encoded over them.
func invoke(fn reflect.Value, first reflect.Value, raw []byte) uintptr {
	wire := reflect.New(fn.Type().In(1)).Elem()
	copy(unsafe.Slice((*byte)(wire.Addr().UnsafePointer()), wire.Type().Size()), raw)
	return uintptr(fn.Call([]reflect.Value{first, wire})[0].Uint())
}
