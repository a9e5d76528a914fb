// Command layoutgen prints the layout of the llama.cpp structs kvtrim
// passes or reads, from the DWARF of an object file compiled with -g
// (native/c/layout.c, built by native/gen-layout.sh against a release's
// headers). Reading debug information rather than compiling offsetof for
// each field keeps it working on every release's headers, whichever
// fields they have.
//
// Each line is "struct field offset size type"; the field "-" is the
// struct itself. The type is the field's C type with typedefs resolved to
// a kind: int8..int64, uint8..uint64, float32, float64, bool, pointer,
// array(N)<elem>, struct or union.
//
//	go run ./native/layoutgen layout.o
package main

import (
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// structs are the C structs kvtrim's bindings need, in the table's order.
var structs = []string{
	"llama_model_params",
	"llama_context_params",
	"llama_batch",
	"llama_sampler_chain_params",
	"llama_token_data",
	"llama_token_data_array",
	"llama_perf_context_data",
	"ggml_tensor",
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: layoutgen OBJECT_FILE")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "layoutgen:", err)
		os.Exit(1)
	}
}

func run(path string, w io.Writer) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	d, err := f.DWARF()
	if err != nil {
		return fmt.Errorf("read debug information of %s (compile it with -g): %w", path, err)
	}
	found, err := findStructs(d)
	if err != nil {
		return err
	}
	funcs, err := findFuncs(d)
	if err != nil {
		return err
	}
	for _, name := range structs {
		st, ok := found[name]
		if !ok {
			return fmt.Errorf("%s: struct %s not described; is it declared in native/c/layout.c?", path, name)
		}
		fmt.Fprintf(w, "%s - 0 %d struct\n", name, st.ByteSize)
		for _, f := range st.Field {
			fmt.Fprintf(w, "%s %s %d %d %s\n", name, f.Name, f.ByteOffset, f.Type.Size(), kind(f.Type))
		}
	}
	names := make([]string, 0, len(funcs))
	for name := range funcs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for i, t := range funcs[name] {
			if t == nil {
				fmt.Fprintf(w, "func %s %d 0 void\n", name, i)
				continue
			}
			fmt.Fprintf(w, "func %s %d %d %s\n", name, i, t.Size(), kind(t))
		}
	}
	return nil
}

// findFuncs returns the prototypes of the functions declared in the
// object: per function its result type (nil for void) and its parameters'.
func findFuncs(d *dwarf.Data) (map[string][]dwarf.Type, error) {
	out := map[string][]dwarf.Type{}
	err := eachEntry(d, dwarf.TagSubprogram, func(r *dwarf.Reader, e *dwarf.Entry) error {
		name, _ := e.Val(dwarf.AttrName).(string)
		sig := []dwarf.Type{nil}
		if off, ok := e.Val(dwarf.AttrType).(dwarf.Offset); ok {
			var err error
			if sig[0], err = d.Type(off); err != nil {
				return fmt.Errorf("function %s: %w", name, err)
			}
		}
		for e.Children {
			c, err := r.Next()
			if err != nil {
				return fmt.Errorf("function %s: %w", name, err)
			}
			if c == nil || c.Tag == 0 {
				break
			}
			if c.Tag != dwarf.TagFormalParameter {
				r.SkipChildren()
				continue
			}
			off, _ := c.Val(dwarf.AttrType).(dwarf.Offset)
			t, err := d.Type(off)
			if err != nil {
				return fmt.Errorf("function %s: %w", name, err)
			}
			sig = append(sig, t)
		}
		if name != "" {
			out[name] = sig
		}
		return nil
	})
	return out, err
}

// eachEntry calls f for each entry of d tagged tag, with the reader after it.
func eachEntry(d *dwarf.Data, tag dwarf.Tag, f func(r *dwarf.Reader, e *dwarf.Entry) error) error {
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			return fmt.Errorf("read debug information: %w", err)
		}
		if e == nil {
			return nil
		}
		if e.Tag != tag {
			continue
		}
		if err := f(r, e); err != nil {
			return err
		}
	}
}

// findStructs returns the complete (non-declaration) struct types named in
// structs, by name.
func findStructs(d *dwarf.Data) (map[string]*dwarf.StructType, error) {
	want := map[string]bool{}
	for _, s := range structs {
		want[s] = true
	}
	out := map[string]*dwarf.StructType{}
	err := eachEntry(d, dwarf.TagStructType, func(_ *dwarf.Reader, e *dwarf.Entry) error {
		name, _ := e.Val(dwarf.AttrName).(string)
		if !want[name] || out[name] != nil {
			return nil
		}
		if decl, _ := e.Val(dwarf.AttrDeclaration).(bool); decl {
			return nil
		}
		t, err := d.Type(e.Offset)
		if err != nil {
			return fmt.Errorf("struct %s: %w", name, err)
		}
		if st, ok := t.(*dwarf.StructType); ok && !st.Incomplete {
			out[name] = st
		}
		return nil
	})
	return out, err
}

// kind names a C type by what a binding must know of it.
func kind(t dwarf.Type) string {
	for {
		switch u := t.(type) {
		case *dwarf.TypedefType:
			t = u.Type
			continue
		case *dwarf.QualType:
			t = u.Type
			continue
		}
		break
	}
	switch u := t.(type) {
	case *dwarf.PtrType, *dwarf.FuncType:
		return "pointer"
	case *dwarf.BoolType:
		return "bool"
	case *dwarf.FloatType:
		return fmt.Sprintf("float%d", u.ByteSize*8)
	case *dwarf.IntType, *dwarf.CharType:
		return fmt.Sprintf("int%d", t.Size()*8)
	case *dwarf.UintType, *dwarf.UcharType:
		return fmt.Sprintf("uint%d", t.Size()*8)
	case *dwarf.EnumType:
		return enumKind(u)
	case *dwarf.ArrayType:
		n := u.Count
		return fmt.Sprintf("array(%d)%s", n, kind(u.Type))
	case *dwarf.StructType:
		return u.Kind // "struct" or "union"
	}
	return strings.ReplaceAll(t.String(), " ", "_")
}

// enumKind is an enum's underlying integer: signed when any value is
// negative, as C compilers choose it.
func enumKind(e *dwarf.EnumType) string {
	vals := make([]int64, 0, len(e.Val))
	for _, v := range e.Val {
		vals = append(vals, v.Val)
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	if len(vals) > 0 && vals[0] < 0 {
		return fmt.Sprintf("int%d", e.ByteSize*8)
	}
	return fmt.Sprintf("uint%d", e.ByteSize*8)
}
