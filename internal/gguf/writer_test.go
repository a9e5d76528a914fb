package gguf

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestWriterLayout writes every kind of metadata and one tensor of each
// type, with sizes that need padding, and reads the file back with the
// test's own reader.
func TestWriterLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "layout.gguf")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := NewWriter(f)
	w.AddUint32("general.alignment", 64)
	w.AddUint32("u32", 7)
	w.AddInt32("i32", -7)
	w.AddFloat32("f32", 0.5)
	w.AddBool("yes", true)
	w.AddBool("no", false)
	w.AddString("str", "héllo")
	w.AddString("empty", "")
	w.AddStringArray("strs", []string{"a", "", "ccc"})
	w.AddFloat32Array("floats", []float32{1, -1})
	w.AddInt32Array("ints", []int32{3, -4, 5})
	data := map[string][]float32{}
	tensors := []TensorInfo{
		{Name: "a", Type: TypeF32, Shape: []int64{3, 5}},      // 60 bytes
		{Name: "b.weight", Type: TypeF16, Shape: []int64{7}},  // 14 bytes
		{Name: "c", Type: TypeQ8_0, Shape: []int64{64, 3, 1}}, // 6 blocks: 204 bytes
	}
	for i, ti := range tensors {
		w.AddTensor(ti.Name, ti.Type, ti.Shape...)
		v := make([]float32, ti.Elements())
		for j := range v {
			v[j] = float32(i+1) * float32(j%13-6) / 8
		}
		data[ti.Name] = v
	}
	wantSize, err := w.Size()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteHeader(); err != nil {
		t.Fatal(err)
	}
	for _, ti := range tensors {
		v := data[ti.Name]
		step := ti.Type.BlockSize() * 2 // several pieces per tensor
		for len(v) > 0 {
			n := min(step, len(v))
			if err := w.WriteFloat32s(v[:n]); err != nil {
				t.Fatal(err)
			}
			v = v[n:]
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("closing again: %v", err)
	}
	f.Close()

	p, err := parseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.version != 3 {
		t.Errorf("version %d", p.version)
	}
	if p.size != wantSize {
		t.Errorf("file is %d bytes, Size said %d", p.size, wantSize)
	}
	wantKV := map[string]any{
		"general.alignment": uint32(64), "u32": uint32(7), "i32": int32(-7), "f32": float32(0.5),
		"yes": true, "no": false, "str": "héllo", "empty": "",
		"strs": []any{"a", "", "ccc"}, "floats": []any{float32(1), float32(-1)}, "ints": []any{int32(3), int32(-4), int32(5)},
	}
	if !reflect.DeepEqual(p.kv, wantKV) {
		t.Errorf("metadata %v, want %v", p.kv, wantKV)
	}
	if p.keys[0] != "general.alignment" || p.keys[len(p.keys)-1] != "ints" {
		t.Errorf("keys out of order: %v", p.keys)
	}
	if len(p.tensors) != len(tensors) {
		t.Fatalf("%d tensors, want %d", len(p.tensors), len(tensors))
	}
	if p.dataOffset%64 != 0 {
		t.Errorf("data starts at %d, not 64-aligned", p.dataOffset)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	end := p.dataOffset
	for i, pt := range p.tensors {
		ti := tensors[i]
		if pt.name != ti.Name || pt.typ != ti.Type || !reflect.DeepEqual(pt.shape, ti.Shape) {
			t.Errorf("tensor %d: %s %s %v, want %s %s %v", i, pt.name, pt.typ, pt.shape, ti.Name, ti.Type, ti.Shape)
		}
		start := p.dataOffset + int64(pt.offset)
		if start%64 != 0 {
			t.Errorf("tensor %s starts at %d, not 64-aligned", pt.name, start)
		}
		if bytes.ContainsFunc(raw[end:start], func(r rune) bool { return r != 0 }) {
			t.Errorf("padding before tensor %s is not zeros", pt.name)
		}
		want, err := ti.Type.Encode(nil, data[ti.Name])
		if err != nil {
			t.Fatal(err)
		}
		end = start + int64(len(want))
		if !bytes.Equal(raw[start:end], want) {
			t.Errorf("tensor %s data differs from its encoding", pt.name)
		}
	}
	if end > p.size || p.size-end >= 64 || p.size%64 != 0 {
		t.Errorf("last tensor ends at %d, file at %d: want padding to the next multiple of 64", end, p.size)
	}
}

// TestWriterNoTensors writes metadata only: no padding follows it.
func TestWriterNoTensors(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.AddString("k", "v")
	size, err := w.Size()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// magic, version, two counts, then the key (8+1), its type (4) and
	// the value (8+1).
	if want := 4 + 4 + 8 + 8 + 9 + 4 + 9; buf.Len() != want || size != int64(want) {
		t.Errorf("wrote %d bytes, Size said %d, want %d", buf.Len(), size, want)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00")) {
		t.Errorf("header % x", buf.Bytes()[:24])
	}
}

// TestWriterMisuse checks that each mistake gives an error naming it.
func TestWriterMisuse(t *testing.T) {
	for _, c := range []struct {
		name, want string
		do         func(w *Writer) error
	}{
		{"duplicate key", "added twice", func(w *Writer) error {
			w.AddUint32("k", 1)
			w.AddString("k", "x")
			return w.WriteHeader()
		}},
		{"empty key", "empty key", func(w *Writer) error { w.AddBool("", true); return w.WriteHeader() }},
		{"alignment not a power of two", "power of two", func(w *Writer) error {
			w.AddUint32("general.alignment", 48)
			return w.WriteHeader()
		}},
		{"alignment of the wrong type", "uint32", func(w *Writer) error {
			w.AddInt32("general.alignment", 32)
			return w.WriteHeader()
		}},
		{"duplicate tensor", "declared twice", func(w *Writer) error {
			w.AddTensor("t", TypeF32, 4)
			w.AddTensor("t", TypeF32, 4)
			return w.WriteHeader()
		}},
		{"q8_0 row not whole blocks", "block size", func(w *Writer) error {
			w.AddTensor("t", TypeQ8_0, 33, 2)
			return w.WriteHeader()
		}},
		{"zero dimension", "below 1", func(w *Writer) error { w.AddTensor("t", TypeF32, 4, 0); return w.WriteHeader() }},
		{"five dimensions", "dimensions", func(w *Writer) error { w.AddTensor("t", TypeF32, 1, 1, 1, 1, 1); return w.WriteHeader() }},
		{"long name", "name", func(w *Writer) error { w.AddTensor(strings.Repeat("x", 64), TypeF32, 1); return w.WriteHeader() }},
		{"unsupported type", "unsupported", func(w *Writer) error { w.AddTensor("t", Type(2), 32); return w.WriteHeader() }},
		{"data before header", "header is not written", func(w *Writer) error {
			w.AddTensor("t", TypeF32, 4)
			return w.WriteData(make([]byte, 16))
		}},
		{"metadata after header", "already written", func(w *Writer) error {
			if err := w.WriteHeader(); err != nil {
				return err
			}
			w.AddUint32("late", 1)
			return w.Close()
		}},
		{"too much data", "only 16", func(w *Writer) error {
			w.AddTensor("t", TypeF32, 4)
			if err := w.WriteHeader(); err != nil {
				return err
			}
			return w.WriteData(make([]byte, 20))
		}},
		{"data after the last tensor", "after the last tensor", func(w *Writer) error {
			w.AddTensor("t", TypeF32, 4)
			if err := w.WriteHeader(); err != nil {
				return err
			}
			if err := w.WriteFloat32s(make([]float32, 4)); err != nil {
				return err
			}
			return w.WriteFloat32s(make([]float32, 4))
		}},
		{"incomplete tensor", "incomplete", func(w *Writer) error {
			w.AddTensor("t", TypeF32, 4)
			w.AddTensor("u", TypeF32, 4)
			if err := w.WriteHeader(); err != nil {
				return err
			}
			if err := w.WriteFloat32s(make([]float32, 2)); err != nil {
				return err
			}
			return w.Close()
		}},
		{"partial q8_0 block", "blocks", func(w *Writer) error {
			w.AddTensor("t", TypeQ8_0, 64)
			if err := w.WriteHeader(); err != nil {
				return err
			}
			return w.WriteFloat32s(make([]float32, 16))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := NewWriter(&bytes.Buffer{})
			err := c.do(w)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if w.Close() == nil {
				t.Error("Close after an error succeeded")
			}
		})
	}
}
