package bindings

import (
	"bufio"
	"bytes"
	"embed"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unsafe"
)

// layoutFiles are the struct layouts of the supported releases, one table
// per release, generated from its headers by native/gen-layout.sh.
//
//go:embed layouts/*.txt
var layoutFiles embed.FS

// cField is one field of a C struct: where it is, how big, and its kind
// ("int32", "uint64", "float32", "bool", "pointer", "array(4)int64", ...).
type cField struct {
	Offset, Size uintptr
	Kind         string
}

// cStruct is a C struct as one release's headers lay it out.
type cStruct struct {
	Name   string
	Size   uintptr
	Fields map[string]cField
	// end is where its last field ends: a default-params call writes up
	// to there, never its tail padding.
	end uintptr
}

// layout is a release's layout table: its structs by C name, and the
// prototypes of the functions kvtrim calls: per function its result
// (index 0, kind "void" if none) and its parameters.
type layout struct {
	structs map[string]*cStruct
	funcs   map[string][]cField
}

// readLayout parses the embedded table file: lines "struct field offset
// size kind", the field "-" being the struct itself.
func readLayout(file string) (layout, error) {
	data, err := layoutFiles.ReadFile("layouts/" + file)
	if err != nil {
		return layout{}, fmt.Errorf("layout table %s: %w", file, err)
	}
	return parseLayout(data)
}

func parseLayout(data []byte) (layout, error) {
	out := layout{structs: map[string]*cStruct{}, funcs: map[string][]cField{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Fields(line)
		if len(parts) != 5 {
			return layout{}, fmt.Errorf("line %d: %q is not \"struct field offset size kind\"", n, line)
		}
		off, err1 := strconv.ParseUint(parts[2], 10, 32)
		size, err2 := strconv.ParseUint(parts[3], 10, 32)
		if err1 != nil || err2 != nil {
			return layout{}, fmt.Errorf("line %d: bad numbers in %q", n, line)
		}
		if parts[0] == "func" {
			sig := out.funcs[parts[1]]
			if int(off) != len(sig) {
				return layout{}, fmt.Errorf("line %d: %s's argument %d out of order", n, parts[1], off)
			}
			out.funcs[parts[1]] = append(sig, cField{Size: uintptr(size), Kind: parts[4]})
			continue
		}
		s := out.structs[parts[0]]
		if s == nil {
			s = &cStruct{Name: parts[0], Fields: map[string]cField{}}
			out.structs[parts[0]] = s
		}
		if parts[1] == "-" {
			s.Size = uintptr(size)
			continue
		}
		f := cField{Offset: uintptr(off), Size: uintptr(size), Kind: parts[4]}
		s.Fields[parts[1]] = f
		s.end = max(s.end, f.Offset+f.Size)
	}
	if err := sc.Err(); err != nil {
		return layout{}, err
	}
	for name, s := range out.structs {
		if s.Size == 0 || s.end > s.Size {
			return layout{}, fmt.Errorf("struct %s: size %d, fields end at %d", name, s.Size, s.end)
		}
	}
	return out, nil
}

// mirrors are the structs whose Go mirrors (structs.go) are used as they
// lie in memory, so every supported release must lay them out the same.
var mirrors = map[string]reflect.Type{
	"llama_batch":                reflect.TypeFor[cBatch](),
	"llama_sampler_chain_params": reflect.TypeFor[SamplerChainParams](),
	"llama_token_data":           reflect.TypeFor[TokenData](),
	"llama_token_data_array":     reflect.TypeFor[tokenDataArray](),
	"llama_perf_context_data":    reflect.TypeFor[PerfContext](),
	"ggml_tensor":                reflect.TypeFor[cTensor](),
}

// checkMirrors checks the Go mirrors against the table.
func (l layout) checkMirrors() error {
	for name, t := range mirrors {
		s, ok := l.structs[name]
		if !ok {
			return fmt.Errorf("layout table lacks struct %s", name)
		}
		if err := s.checkMirror(t); err != nil {
			return err
		}
	}
	return nil
}

// kindClass is what a binding must agree on with C about a field: its
// size and whether it is an integer, a float, a bool or a pointer (an
// enum is an integer, whatever sign the compiler gave it).
func kindClass(cKind string) string {
	switch {
	case cKind == "bool", cKind == "pointer":
		return cKind
	case strings.HasPrefix(cKind, "float"):
		return "float"
	case strings.HasPrefix(cKind, "int"), strings.HasPrefix(cKind, "uint"):
		return "int"
	case strings.HasPrefix(cKind, "array("):
		return "array"
	}
	return cKind
}

// goKindClass is kindClass for a Go field's type.
func goKindClass(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "bool"
	case reflect.Uintptr, reflect.Pointer, reflect.UnsafePointer:
		return "pointer"
	case reflect.Float32, reflect.Float64:
		return "float"
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "int"
	case reflect.Array:
		return "array"
	}
	return t.Kind().String()
}

// sameKind reports whether a Go type holds a C field's value as it lies:
// the same size and the same kind class.
func sameKind(t reflect.Type, c cField) bool {
	return t.Size() == c.Size && goKindClass(t) == kindClass(c.Kind)
}

// checkMirror reports whether the Go type t is laid out exactly as the C
// struct: the same size, and each C field mirrored by a field tagged with
// its name at the same offset, of the same size and kind.
func (s *cStruct) checkMirror(t reflect.Type) error {
	if t.Size() != s.Size {
		return fmt.Errorf("struct %s is %d bytes, kvtrim's mirror %d", s.Name, s.Size, t.Size())
	}
	seen := 0
	for i := range t.NumField() {
		f := t.Field(i)
		name := f.Tag.Get("c")
		if name == "" {
			continue // padding
		}
		c, ok := s.Fields[name]
		if !ok {
			return fmt.Errorf("struct %s has no field %s", s.Name, name)
		}
		if f.Offset != c.Offset || !sameKind(f.Type, c) {
			return fmt.Errorf("%s.%s is a %s of %d bytes at %d, kvtrim's mirror a %s of %d at %d",
				s.Name, name, c.Kind, c.Size, c.Offset, f.Type, f.Type.Size(), f.Offset)
		}
		seen++
	}
	if seen != len(s.Fields) {
		return fmt.Errorf("struct %s has %d fields, kvtrim's mirror %d", s.Name, len(s.Fields), seen)
	}
	return nil
}

// checkParams reports whether each field of the Go parameter struct t
// that the C struct has agrees with it in size and kind. Fields the C
// struct lacks are allowed: this release does not have them.
func (s *cStruct) checkParams(t reflect.Type) error {
	if s.Size%8 != 0 {
		return fmt.Errorf("struct %s is %d bytes, not a whole number of words", s.Name, s.Size)
	}
	for i := range t.NumField() {
		f := t.Field(i)
		c, ok := s.Fields[f.Tag.Get("c")]
		if !ok {
			continue
		}
		if !sameKind(f.Type, c) {
			return fmt.Errorf("%s.%s is a %s of %d bytes, kvtrim's a %s of %d",
				s.Name, f.Tag.Get("c"), c.Kind, c.Size, f.Type, f.Type.Size())
		}
	}
	return nil
}

// decode copies the fields the C struct in raw has into *dst; the others
// keep their zero values.
func (s *cStruct) decode(raw []byte, dst any) {
	v := reflect.ValueOf(dst).Elem()
	for i := range v.NumField() {
		c, ok := s.Fields[v.Type().Field(i).Tag.Get("c")]
		if !ok {
			continue
		}
		copy(fieldBytes(v.Field(i)), raw[c.Offset:c.Offset+c.Size])
	}
}

// encode writes the fields of src that the C struct has into raw, which
// holds the release's defaults, so the fields kvtrim does not know keep
// theirs. A field the release lacks must be left at its zero value: it
// was asked for and this release cannot do it.
func (s *cStruct) encode(raw []byte, src any) error {
	v := reflect.ValueOf(src)
	for i := range v.NumField() {
		name := v.Type().Field(i).Tag.Get("c")
		if name == "" {
			continue
		}
		c, ok := s.Fields[name]
		if !ok {
			if !v.Field(i).IsZero() {
				return fmt.Errorf("%s.%s is set, but this llama.cpp has no such field", s.Name, name)
			}
			continue
		}
		copy(raw[c.Offset:c.Offset+c.Size], fieldBytes(v.Field(i)))
	}
	return nil
}

// fieldBytes is the memory of a field of an addressable or copied struct.
func fieldBytes(f reflect.Value) []byte {
	if !f.CanAddr() {
		c := reflect.New(f.Type()).Elem()
		c.Set(f)
		f = c
	}
	return unsafe.Slice((*byte)(f.Addr().UnsafePointer()), f.Type().Size())
}

// checkFunctions checks each function in the functions struct (fnType)
// against the prototype in the table: as many parameters, each of the
// same kind and size, and a result of the same kind and size unless Go
// ignores it. A field named ...Legacy binds the older prototype of the
// field named without the suffix: with legacy only it is checked, without
// only its twin.
func (l layout) checkFunctions(fnType reflect.Type, legacy bool) error {
	for i := range fnType.NumField() {
		f := fnType.Field(i)
		_, sym, ok := strings.Cut(f.Tag.Get("sym"), ":")
		if !ok {
			continue
		}
		isLegacy := strings.HasSuffix(f.Name, "Legacy")
		_, hasLegacy := fnType.FieldByName(f.Name + "Legacy")
		if isLegacy != legacy && (isLegacy || hasLegacy) {
			continue
		}
		c, ok := l.funcs[sym]
		if !ok {
			return fmt.Errorf("the table has no prototype of %s: add it to native/c/layout.c and regenerate", sym)
		}
		if err := checkSignature(f.Type, c); err != nil {
			return fmt.Errorf("%s: %w", sym, err)
		}
	}
	return nil
}

// checkSignature compares a Go func type with a C prototype.
func checkSignature(t reflect.Type, c []cField) error {
	if t.NumIn() != len(c)-1 {
		return fmt.Errorf("C takes %d arguments, kvtrim passes %d", len(c)-1, t.NumIn())
	}
	for i := range t.NumIn() {
		if !sameArg(t.In(i), c[i+1]) {
			return fmt.Errorf("argument %d is a C %s of %d bytes, kvtrim passes a %s", i+1, c[i+1].Kind, c[i+1].Size, t.In(i))
		}
	}
	if t.NumOut() > 0 && (c[0].Kind == "void" || !sameArg(t.Out(0), c[0])) {
		return fmt.Errorf("it returns a C %s, kvtrim reads a %s", c[0].Kind, t.Out(0))
	}
	return nil
}

// sameArg reports whether a Go argument type passes as the C one: a Go
// string is a char pointer, a uintptr a pointer or a 64-bit integer, and
// a struct passes by value with the same size.
func sameArg(t reflect.Type, c cField) bool {
	switch t.Kind() {
	case reflect.String, reflect.Func:
		return c.Kind == "pointer"
	case reflect.Uintptr:
		return c.Kind == "pointer" || kindClass(c.Kind) == "int" && c.Size == 8
	case reflect.Struct:
		return c.Kind == "struct" && t.Size() == c.Size
	}
	return sameKind(t, c)
}
