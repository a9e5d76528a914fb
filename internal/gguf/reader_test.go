package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
)

// parsed is a GGUF file as the test reader sees it: written independently
// of the writer, from the format's description, to check its output.
type parsed struct {
	version    uint32
	kv         map[string]any // uint32, int32, float32, bool, string, []any, …
	keys       []string       // in file order
	tensors    []parsedTensor
	dataOffset int64 // where the tensor data starts
	size       int64 // file size
}

type parsedTensor struct {
	name   string
	shape  []int64
	typ    Type
	offset uint64 // from dataOffset
}

// ggufReader reads GGUF's little-endian values, keeping the first error.
type ggufReader struct {
	r   *bufio.Reader
	pos int64
	err error
}

func (g *ggufReader) bytes(n uint64) []byte {
	if g.err != nil {
		return nil
	}
	if n > 1<<30 {
		g.err = fmt.Errorf("length %d at %d is implausible", n, g.pos)
		return nil
	}
	b := make([]byte, n)
	k, err := io.ReadFull(g.r, b)
	g.pos += int64(k)
	if err != nil {
		g.err = fmt.Errorf("at %d: %w", g.pos, err)
	}
	return b
}

func (g *ggufReader) u8() uint8 {
	if b := g.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (g *ggufReader) u32() uint32 {
	if b := g.bytes(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (g *ggufReader) u64() uint64 {
	if b := g.bytes(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (g *ggufReader) str() string { return string(g.bytes(g.u64())) }

// value reads one value of GGUF type typ.
func (g *ggufReader) value(typ uint32) any {
	switch typ {
	case 0:
		return g.u8()
	case 1:
		return int8(g.u8())
	case 2:
		return binary.LittleEndian.Uint16(g.bytes(2))
	case 3:
		return int16(binary.LittleEndian.Uint16(g.bytes(2)))
	case 4:
		return g.u32()
	case 5:
		return int32(g.u32())
	case 6:
		return math.Float32frombits(g.u32())
	case 7:
		b := g.u8()
		if b > 1 {
			g.err = fmt.Errorf("bool %d at %d", b, g.pos)
		}
		return b == 1
	case 8:
		return g.str()
	case 9:
		elem, n := g.u32(), g.u64()
		if n > 1<<24 {
			g.err = fmt.Errorf("array of %d at %d", n, g.pos)
			return nil
		}
		a := make([]any, 0, n)
		for range n {
			a = append(a, g.value(elem))
		}
		return a
	case 10:
		return g.u64()
	case 11:
		return int64(g.u64())
	case 12:
		return math.Float64frombits(g.u64())
	}
	if g.err == nil {
		g.err = fmt.Errorf("value type %d at %d", typ, g.pos)
	}
	return nil
}

// parseFile reads a GGUF file's header, metadata and tensor infos, and
// checks that the tensors' offsets are those ggml expects.
func parseFile(path string) (*parsed, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	g := &ggufReader{r: bufio.NewReader(f)}
	if m := string(g.bytes(4)); m != "GGUF" && g.err == nil {
		return nil, fmt.Errorf("magic %q", m)
	}
	p := &parsed{version: g.u32(), kv: map[string]any{}, size: st.Size()}
	nt, nkv := g.u64(), g.u64()
	for i := uint64(0); i < nkv && g.err == nil; i++ {
		k := g.str()
		if _, dup := p.kv[k]; dup {
			return nil, fmt.Errorf("key %s twice", k)
		}
		p.kv[k] = g.value(g.u32())
		p.keys = append(p.keys, k)
	}
	for i := uint64(0); i < nt && g.err == nil; i++ {
		t := parsedTensor{name: g.str()}
		nd := g.u32()
		if nd == 0 || nd > 4 {
			return nil, fmt.Errorf("tensor %s has %d dimensions", t.name, nd)
		}
		for range nd {
			t.shape = append(t.shape, int64(g.u64()))
		}
		t.typ = Type(g.u32())
		t.offset = g.u64()
		p.tensors = append(p.tensors, t)
	}
	if g.err != nil {
		return nil, g.err
	}
	align := int64(32)
	if a, ok := p.kv["general.alignment"].(uint32); ok {
		align = int64(a)
	}
	p.dataOffset = (g.pos + align - 1) / align * align
	if nt == 0 {
		p.dataOffset = g.pos
	}
	next := uint64(0)
	for _, t := range p.tensors {
		if t.offset != next {
			return nil, fmt.Errorf("tensor %s at offset %d, want %d", t.name, t.offset, next)
		}
		n := TensorInfo{Type: t.typ, Shape: t.shape}.Bytes()
		next += uint64((n + align - 1) / align * align)
	}
	return p, nil
}
