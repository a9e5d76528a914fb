package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
)

// valueType numbers a metadata value's type, as enum gguf_type does.
type valueType uint32

// The metadata value types the writer emits.
const (
	valUint32  valueType = 4
	valInt32   valueType = 5
	valFloat32 valueType = 6
	valBool    valueType = 7
	valString  valueType = 8
	valArray   valueType = 9
)

// alignmentKey sets the data alignment when present (a uint32 power of two).
const alignmentKey = "general.alignment"

// DefaultAlignment is the data alignment of a file without general.alignment.
const DefaultAlignment = 32

// AddUint32 adds a uint32 metadata value. Adding general.alignment sets the
// alignment of the tensor data (a power of two).
func (w *Writer) AddUint32(key string, v uint32) {
	if key == alignmentKey && (v == 0 || v&(v-1) != 0) {
		w.fail(fmt.Errorf("metadata %s: alignment %d is not a power of two", key, v))
		return
	}
	if w.addKV(key, valUint32, func(b []byte) []byte { return binary.LittleEndian.AppendUint32(b, v) }) && key == alignmentKey {
		w.alignment = int64(v)
	}
}

// AddInt32 adds an int32 metadata value.
func (w *Writer) AddInt32(key string, v int32) {
	w.addKV(key, valInt32, func(b []byte) []byte { return binary.LittleEndian.AppendUint32(b, uint32(v)) })
}

// AddFloat32 adds a float32 metadata value.
func (w *Writer) AddFloat32(key string, v float32) {
	w.addKV(key, valFloat32, func(b []byte) []byte { return binary.LittleEndian.AppendUint32(b, math.Float32bits(v)) })
}

// AddBool adds a bool metadata value.
func (w *Writer) AddBool(key string, v bool) {
	w.addKV(key, valBool, func(b []byte) []byte { return appendBool(b, v) })
}

// AddString adds a string metadata value.
func (w *Writer) AddString(key, v string) {
	w.addKV(key, valString, func(b []byte) []byte { return appendString(b, v) })
}

// AddStringArray adds an array of strings.
func (w *Writer) AddStringArray(key string, v []string) {
	w.addKV(key, valArray, func(b []byte) []byte {
		b = appendArrayHead(b, valString, len(v))
		for _, s := range v {
			b = appendString(b, s)
		}
		return b
	})
}

// AddFloat32Array adds an array of float32s.
func (w *Writer) AddFloat32Array(key string, v []float32) {
	w.addKV(key, valArray, func(b []byte) []byte {
		b = appendArrayHead(b, valFloat32, len(v))
		for _, f := range v {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
		}
		return b
	})
}

// AddInt32Array adds an array of int32s.
func (w *Writer) AddInt32Array(key string, v []int32) {
	w.addKV(key, valArray, func(b []byte) []byte {
		b = appendArrayHead(b, valInt32, len(v))
		for _, i := range v {
			b = binary.LittleEndian.AppendUint32(b, uint32(i))
		}
		return b
	})
}

// addKV appends one key-value pair to the encoded metadata: the key, the
// value's type and the value. It reports whether it did.
func (w *Writer) addKV(key string, typ valueType, value func([]byte) []byte) bool {
	var err error
	switch {
	case w.phase != declaring:
		err = fmt.Errorf("metadata %s: the header is already written", key)
	case key == "":
		err = fmt.Errorf("metadata: empty key")
	case w.keys[key]:
		err = fmt.Errorf("metadata %s: key added twice", key)
	case key == alignmentKey && typ != valUint32:
		err = fmt.Errorf("metadata %s: must be a uint32", key)
	}
	if err != nil {
		w.fail(err)
		return false
	}
	w.keys[key] = true
	w.kv = appendString(w.kv, key)
	w.kv = binary.LittleEndian.AppendUint32(w.kv, uint32(typ))
	w.kv = value(w.kv)
	w.nkv++
	return true
}

func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendArrayHead(b []byte, elem valueType, n int) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(elem))
	return binary.LittleEndian.AppendUint64(b, uint64(n))
}
