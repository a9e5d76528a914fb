package bindings

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"runtime"
	"strconv"
)

// ModelOptions are the load settings kvtrim exposes.
type ModelOptions struct {
	// GPULayers is how many layers to offload (-1: all, llama.cpp's default).
	GPULayers int32
	// NoRepack keeps the weights as the file lays them out, in plain
	// buffers: llama.cpp does not repack them into the extra buffer types
	// of its CPU matrix kernels (AMX, and the interleaved q4_0 and q8_0
	// layouts), as llama.cpp's --no-repack.
	NoRepack bool
}

// Model is a loaded GGUF model.
type Model struct {
	lib   *Library
	ptr   uintptr
	vocab *Vocab
	// Path is the file the model was loaded from ("" for a borrowed one).
	Path string
	// borrowed: another binding loaded it, and frees it.
	borrowed bool
}

// ggufMagic starts every GGUF file.
var ggufMagic = []byte("GGUF")

// LoadModel loads a GGUF model. A missing, unreadable or non-GGUF file is
// refused before llama.cpp sees it; a GGUF that llama.cpp cannot load gives
// an error quoting llama.cpp's reason.
func (l *Library) LoadModel(path string, opt ModelOptions) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("load model %s: no such file; pass the path of a .gguf model with -m", path)
		}
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	magic := make([]byte, 4)
	_, err = io.ReadFull(f, magic)
	f.Close()
	if err != nil || string(magic) != string(ggufMagic) {
		return nil, fmt.Errorf("load model %s: not a GGUF file (it does not start with \"GGUF\"); pass a llama.cpp .gguf model", path)
	}
	p, raw, err := l.params.modelParams()
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	p.NGPULayers = opt.GPULayers
	p.UseExtraBufts = !opt.NoRepack
	if err := l.params.model.encode(raw, p); err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	ptr, llamaErr := withLlamaError(l, func() uintptr { return invoke(l.params.loadModel, reflect.ValueOf(cString(path)), raw) })
	if ptr == 0 {
		return nil, errors.New(quoteLlama(fmt.Sprintf("load model %s: llama.cpp could not load it; the file may be truncated or corrupt", path), llamaErr))
	}
	return l.wrapModel(ptr, path, false), nil
}

// wrapModel makes the Model of a llama_model *: kvtrim's own, or
// borrowed from another binding (never freed).
func (l *Library) wrapModel(ptr uintptr, path string, borrowed bool) *Model {
	m := &Model{lib: l, ptr: ptr, Path: path, borrowed: borrowed}
	m.vocab = &Vocab{lib: l, ptr: l.fn.llamaModelGetVocab(ptr)}
	return m
}

// Close frees the model. Contexts made from it must be closed first.
func (m *Model) Close() {
	if m.ptr != 0 && !m.borrowed {
		m.lib.fn.llamaModelFree(m.ptr)
		m.ptr = 0
	}
}

// Vocab returns the model's vocabulary.
func (m *Model) Vocab() *Vocab { return m.vocab }

// NCtxTrain is the context length the model's metadata says it was trained on.
func (m *Model) NCtxTrain() int { return int(m.lib.fn.llamaModelNCtxTrain(m.ptr)) }

// NLayer is the number of transformer layers.
func (m *Model) NLayer() int { return int(m.lib.fn.llamaModelNLayer(m.ptr)) }

// NHead is the number of query heads per layer.
func (m *Model) NHead() int { return int(m.lib.fn.llamaModelNHead(m.ptr)) }

// NHeadKV is the number of key/value heads per layer (fewer than NHead with GQA).
func (m *Model) NHeadKV() int { return int(m.lib.fn.llamaModelNHeadKV(m.ptr)) }

// NSWA is the sliding-window attention size (0: the model has none).
func (m *Model) NSWA() int { return int(m.lib.fn.llamaModelNSWA(m.ptr)) }

// Rope is how a model rotates its queries and keys by position: the
// rotation applies to pairs of the first Dims values of each head, pair i
// turned by position x Scale x Base^(-2i/Dims); Neox pairs value i with
// i + Dims/2, the other layout (llama's) adjacent values.
type Rope struct {
	Neox        bool
	Dims        int
	Base, Scale float64
}

// Rope reports the model's rotary position embedding (Dims 0 when it has
// none), or false for one kvtrim does not model (multi-section and vision
// RoPE).
// YaRN's and LongRoPE's corrections to the angles are not part of it.
func (m *Model) Rope() (Rope, bool) {
	typ := m.lib.fn.llamaModelRopeType(m.ptr)
	switch typ {
	case -1: // LLAMA_ROPE_TYPE_NONE: positions rotate nothing
		return Rope{}, true
	case 0, 2: // LLAMA_ROPE_TYPE_NORM, LLAMA_ROPE_TYPE_NEOX
	default:
		return Rope{}, false
	}
	arch := m.Arch()
	r := Rope{Neox: typ == 2, Dims: m.NEmbd() / max(1, m.NHead()), Base: 10000, Scale: float64(m.lib.fn.llamaModelRopeScale(m.ptr))}
	if v, err := strconv.Atoi(m.Meta(arch + ".rope.dimension_count")); err == nil && v > 0 {
		r.Dims = v
	}
	if v, err := strconv.ParseFloat(m.Meta(arch+".rope.freq_base"), 64); err == nil && v > 0 {
		r.Base = v
	}
	if r.Scale <= 0 {
		r.Scale = 1
	}
	return r, true
}

// IsRecurrent reports a recurrent model (Mamba, RWKV): its memory is a
// state, not one cell per position.
func (m *Model) IsRecurrent() bool { return m.lib.fn.llamaModelIsRecurrent(m.ptr) }

// IsHybrid reports a model mixing attention and recurrent layers.
func (m *Model) IsHybrid() bool { return m.lib.fn.llamaModelIsHybrid(m.ptr) }

// NEmbd is the embedding width.
func (m *Model) NEmbd() int { return int(m.lib.fn.llamaModelNEmbd(m.ptr)) }

// Size is the total size of the model's tensors in bytes.
func (m *Model) Size() uint64 { return m.lib.fn.llamaModelSize(m.ptr) }

// NParams is the number of parameters.
func (m *Model) NParams() uint64 { return m.lib.fn.llamaModelNParams(m.ptr) }

// Arch is the model's architecture (general.architecture), e.g. "llama".
func (m *Model) Arch() string { return m.Meta("general.architecture") }

// Meta returns a metadata value as a string, or "" if the key is absent.
func (m *Model) Meta(key string) string {
	buf := make([]byte, 256)
	for {
		n := m.lib.fn.llamaModelMetaValStr(m.ptr, cString(key), &buf[0], uint64(len(buf)))
		if n < 0 {
			return ""
		}
		if int(n) < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, n+1)
	}
}

// Desc is llama.cpp's one-line description of the model.
func (m *Model) Desc() string {
	buf := make([]byte, 256)
	n := m.lib.fn.llamaModelDesc(m.ptr, &buf[0], uint64(len(buf)))
	if n < 0 {
		return ""
	}
	return string(buf[:min(int(n), len(buf)-1)])
}

// ChatTemplate returns the model's default chat template, or "" if it has none.
func (m *Model) ChatTemplate() string {
	return goString(m.lib.fn.llamaModelChatTemplate(m.ptr, nil))
}

// ChatMessage is one turn of a conversation.
type ChatMessage struct {
	Role, Content string
}

// cChatMessage mirrors struct llama_chat_message.
type cChatMessage struct {
	role, content *byte
}

// ApplyChatTemplate formats msgs with the model's chat template (or tmpl, if
// not empty), ending with the assistant's turn when addAssistant is set.
func (m *Model) ApplyChatTemplate(tmpl string, msgs []ChatMessage, addAssistant bool) (string, error) {
	if tmpl == "" {
		tmpl = m.ChatTemplate()
	}
	if tmpl == "" {
		return "", fmt.Errorf("model %s has no chat template: give the prompt as plain text (drop --chat)", m.Path)
	}
	cmsgs := make([]cChatMessage, len(msgs))
	size := 1024
	for i, msg := range msgs {
		cmsgs[i] = cChatMessage{cString(msg.Role), cString(msg.Content)}
		size += 2 * (len(msg.Role) + len(msg.Content))
	}
	var first *cChatMessage
	if len(cmsgs) > 0 {
		first = &cmsgs[0]
	}
	ctmpl := cString(tmpl)
	for {
		buf := make([]byte, size)
		n := m.lib.fn.llamaChatApplyTemplate(ctmpl, unsafePointer(first), uint64(len(cmsgs)), addAssistant, &buf[0], int32(len(buf)))
		runtime.KeepAlive(cmsgs)
		if n < 0 {
			return "", fmt.Errorf("model %s: llama.cpp does not support its chat template", m.Path)
		}
		if int(n) <= len(buf) {
			return string(buf[:n]), nil
		}
		size = int(n)
	}
}
