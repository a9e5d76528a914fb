package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the GGUF version the writer produces.
const Version = 3

// magic starts every GGUF file.
const magic = "GGUF"

// maxNameLen is the longest tensor name ggml holds (64 bytes with the NUL).
const maxNameLen = 63

// maxDims is the most dimensions a ggml tensor has.
const maxDims = 4

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	Name string
	Type Type
	// Shape is ggml's ne: the first dimension is the contiguous one, so a
	// matrix mapping n_embd inputs to n_vocab outputs is {n_embd, n_vocab}.
	Shape []int64
}

// Elements is the number of values in the tensor.
func (t TensorInfo) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Bytes is the size of the tensor's encoded data, without padding.
func (t TensorInfo) Bytes() int64 { return t.Type.Bytes(t.Elements()) }

// phase is where a Writer is in the file.
type phase int

const (
	declaring phase = iota // adding metadata and tensor infos
	writing                // header written; tensor data next
	closed                 // all data written
)

// Writer streams a GGUF file: add metadata and declare tensors, write the
// header, then write each tensor's data in the declared order, in as many
// pieces as convenient, and Close. Only the metadata and the tensor infos
// are held in memory.
//
// Adding metadata or tensors does not return errors: the first one is kept
// and returned by WriteHeader, Size and every later call, as bufio.Writer
// does. A Writer is not safe for concurrent use.
type Writer struct {
	out       *bufio.Writer
	alignment int64
	kv        []byte // encoded key-value pairs
	nkv       int64
	keys      map[string]bool
	tensors   []TensorInfo
	names     map[string]bool
	phase     phase
	err       error
	written   int64  // bytes handed to out
	cur       int    // the tensor whose data comes next
	curBytes  int64  // how much of it is written
	scratch   []byte // encoding buffer of WriteFloat32s
}

// NewWriter returns a Writer writing to out. It buffers its output; Close
// flushes it but does not close out.
func NewWriter(out io.Writer) *Writer {
	return &Writer{
		out:       bufio.NewWriterSize(out, 1<<20),
		alignment: DefaultAlignment,
		keys:      map[string]bool{},
		names:     map[string]bool{},
	}
}

// Err is the first error the Writer met, or nil.
func (w *Writer) Err() error { return w.err }

func (w *Writer) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

// checkDeclaring returns an error unless the header is still to be written.
func (w *Writer) checkDeclaring(what string) error {
	if w.phase != declaring {
		return fmt.Errorf("%s: the header is already written", what)
	}
	return nil
}

// AddTensor declares a tensor; its data must be written in the order the
// tensors are declared. shape is ggml's ne (see TensorInfo.Shape): one to
// four positive dimensions, the first a multiple of typ.BlockSize().
func (w *Writer) AddTensor(name string, typ Type, shape ...int64) {
	if err := w.checkDeclaring("tensor " + name); err != nil {
		w.fail(err)
		return
	}
	if err := checkTensor(name, typ, shape); err != nil {
		w.fail(fmt.Errorf("tensor %s: %w", name, err))
		return
	}
	if w.names[name] {
		w.fail(fmt.Errorf("tensor %s: declared twice", name))
		return
	}
	w.names[name] = true
	w.tensors = append(w.tensors, TensorInfo{Name: name, Type: typ, Shape: append([]int64(nil), shape...)})
}

func checkTensor(name string, typ Type, shape []int64) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("name must be 1 to %d bytes", maxNameLen)
	}
	if !typ.valid() {
		return fmt.Errorf("unsupported type %s", typ)
	}
	if len(shape) == 0 || len(shape) > maxDims {
		return fmt.Errorf("%d dimensions, want 1 to %d", len(shape), maxDims)
	}
	n := int64(1)
	for _, d := range shape {
		if d <= 0 {
			return fmt.Errorf("shape %v has a dimension below 1", shape)
		}
		if n > (1<<62)/d {
			return fmt.Errorf("shape %v is too large", shape)
		}
		n *= d
	}
	if shape[0]%int64(typ.BlockSize()) != 0 {
		return fmt.Errorf("first dimension %d is not a multiple of %s's block size %d", shape[0], typ, typ.BlockSize())
	}
	return nil
}

// pad is n rounded up to the alignment.
func (w *Writer) pad(n int64) int64 { return (n + w.alignment - 1) / w.alignment * w.alignment }

// header encodes everything before the tensor data, without the padding:
// magic, version, counts, metadata and tensor infos with their offsets.
func (w *Writer) header() []byte {
	b := make([]byte, 0, len(w.kv)+len(w.tensors)*96+24)
	b = append(b, magic...)
	b = binary.LittleEndian.AppendUint32(b, Version)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(w.tensors)))
	b = binary.LittleEndian.AppendUint64(b, uint64(w.nkv))
	b = append(b, w.kv...)
	offset := int64(0)
	for _, t := range w.tensors {
		b = appendString(b, t.Name)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(t.Shape)))
		for _, d := range t.Shape {
			b = binary.LittleEndian.AppendUint64(b, uint64(d))
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(t.Type))
		b = binary.LittleEndian.AppendUint64(b, uint64(offset))
		offset += w.pad(t.Bytes())
	}
	return b
}

// Size is the size the whole file will have once written, computed from
// the metadata and tensors declared so far.
func (w *Writer) Size() (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := int64(len(w.header()))
	if len(w.tensors) == 0 {
		return n, nil
	}
	n = w.pad(n)
	for _, t := range w.tensors {
		n += w.pad(t.Bytes())
	}
	return n, nil
}

// WriteHeader writes the header, the metadata and the tensor infos, padded
// to the alignment. No metadata or tensors can be added after it.
func (w *Writer) WriteHeader() error {
	if w.err != nil {
		return w.err
	}
	if err := w.checkDeclaring("write header"); err != nil {
		w.fail(err)
		return err
	}
	w.phase = writing
	if err := w.write(w.header()); err != nil {
		return fmt.Errorf("write header: %w", err)
	}
	if len(w.tensors) > 0 {
		if err := w.writePadding(); err != nil {
			return fmt.Errorf("write header: %w", err)
		}
	}
	return nil
}

// current returns the tensor whose data comes next, or an error (kept)
// if there is none.
func (w *Writer) current() (TensorInfo, error) {
	var err error
	switch {
	case w.err != nil:
		return TensorInfo{}, w.err
	case w.phase == declaring:
		err = errors.New("write tensor data: the header is not written yet")
	case w.phase == closed:
		err = errors.New("write tensor data: the writer is closed")
	case w.cur >= len(w.tensors):
		err = fmt.Errorf("write tensor data: all %d tensors are already written; there is nothing after the last tensor", len(w.tensors))
	default:
		return w.tensors[w.cur], nil
	}
	w.fail(err)
	return TensorInfo{}, err
}

// WriteData writes encoded data of the current tensor: the next len(p)
// bytes of it. The data of one tensor may come in any number of pieces, but
// a piece may not run past its tensor's end.
func (w *Writer) WriteData(p []byte) error {
	t, err := w.current()
	if err != nil {
		return err
	}
	if left := t.Bytes() - w.curBytes; int64(len(p)) > left {
		err := fmt.Errorf("write tensor %s: %d bytes, but only %d of its %d are left", t.Name, len(p), left, t.Bytes())
		w.fail(err)
		return err
	}
	if err := w.write(p); err != nil {
		return fmt.Errorf("write tensor %s: %w", t.Name, err)
	}
	w.curBytes += int64(len(p))
	if w.curBytes == t.Bytes() {
		if err := w.writePadding(); err != nil {
			return fmt.Errorf("write tensor %s: %w", t.Name, err)
		}
		w.cur++
		w.curBytes = 0
	}
	return nil
}

// WriteFloat32s encodes v as the current tensor's type and writes it (see
// WriteData); len(v) must be a multiple of the type's block size.
func (w *Writer) WriteFloat32s(v []float32) error {
	t, err := w.current()
	if err != nil {
		return err
	}
	if w.scratch, err = t.Type.Encode(w.scratch[:0], v); err != nil {
		err = fmt.Errorf("write tensor %s: %w", t.Name, err)
		w.fail(err)
		return err
	}
	return w.WriteData(w.scratch)
}

// Close checks that every declared tensor was written in full and flushes
// the output. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.phase == declaring {
		if err := w.WriteHeader(); err != nil {
			return err
		}
	}
	if w.phase == closed {
		return nil
	}
	if w.cur < len(w.tensors) {
		t := w.tensors[w.cur]
		err := fmt.Errorf("close: tensor %s is incomplete (%d of %d bytes written; %d tensors after it)", t.Name, w.curBytes, t.Bytes(), len(w.tensors)-w.cur-1)
		w.fail(err)
		return err
	}
	w.phase = closed
	if err := w.out.Flush(); err != nil {
		w.fail(err)
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

// write writes p, counting it and keeping the first error.
func (w *Writer) write(p []byte) error {
	n, err := w.out.Write(p)
	w.written += int64(n)
	if err != nil {
		w.fail(err)
	}
	return err
}

// writePadding writes zeros up to the next multiple of the alignment.
func (w *Writer) writePadding() error {
	var zeros [256]byte
	for n := w.pad(w.written) - w.written; n > 0; {
		k := min(n, int64(len(zeros)))
		if err := w.write(zeros[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
