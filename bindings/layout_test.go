package bindings

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// layoutFile is the layout table of the release the Go mirrors copy,
// generated from its headers by native/gen-layout.sh.
var layoutFile = filepath.Join("testdata", release050.Layout)

// mirrors maps each Go mirror to the C struct it copies.
var mirrors = map[string]reflect.Type{
	"llama_model_params":         reflect.TypeFor[ModelParams](),
	"llama_context_params":       reflect.TypeFor[ContextParams](),
	"llama_batch":                reflect.TypeFor[cBatch](),
	"llama_sampler_chain_params": reflect.TypeFor[SamplerChainParams](),
	"llama_token_data":           reflect.TypeFor[TokenData](),
	"llama_token_data_array":     reflect.TypeFor[tokenDataArray](),
	"llama_perf_context_data":    reflect.TypeFor[PerfContext](),
	"ggml_tensor":                reflect.TypeFor[cTensor](),
}

type cField struct{ offset, size uintptr }

// readLayout parses "struct field offset size" lines; field "-" is the struct itself.
func readLayout(t *testing.T, path string) map[string]map[string]cField {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open layout table: %v", err)
	}
	defer f.Close()
	out := map[string]map[string]cField{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Fields(line)
		if len(parts) != 4 {
			t.Fatalf("bad layout line %q", line)
		}
		off, err1 := strconv.ParseUint(parts[2], 10, 64)
		size, err2 := strconv.ParseUint(parts[3], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("bad numbers in layout line %q", line)
		}
		if out[parts[0]] == nil {
			out[parts[0]] = map[string]cField{}
		}
		out[parts[0]][parts[1]] = cField{uintptr(off), uintptr(size)}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestStructLayoutMatchesHeaders(t *testing.T) {
	table := readLayout(t, layoutFile)
	for cName, goType := range mirrors {
		fields, ok := table[cName]
		if !ok {
			t.Errorf("%s: not in %s", cName, layoutFile)
			continue
		}
		if got, want := goType.Size(), fields["-"].size; got != want {
			t.Errorf("%s: Go mirror %s is %d bytes, C struct is %d", cName, goType.Name(), got, want)
		}
		seen := map[string]bool{"-": true}
		for i := range goType.NumField() {
			f := goType.Field(i)
			tag := f.Tag.Get("c")
			if tag == "" {
				continue // padding
			}
			seen[tag] = true
			want, ok := fields[tag]
			if !ok {
				t.Errorf("%s.%s: no such C field", cName, tag)
				continue
			}
			if f.Offset != want.offset || f.Type.Size() != want.size {
				t.Errorf("%s.%s: Go offset %d size %d, C offset %d size %d",
					cName, tag, f.Offset, f.Type.Size(), want.offset, want.size)
			}
		}
		for name := range fields {
			if !seen[name] {
				t.Errorf("%s.%s: C field has no Go mirror", cName, name)
			}
		}
	}
	if len(table) != len(mirrors) {
		t.Errorf("layout table has %d structs, Go mirrors %d", len(table), len(mirrors))
	}
}

// TestLayoutTableIsCurrent regenerates the table from the pinned source when
// it is at hand (KVTRIM_LLAMA_SRC, as cloned by native/build-llama.sh) and a C
// compiler exists, so a stale table cannot hide a layout change.
func TestLayoutTableIsCurrent(t *testing.T) {
	src := os.Getenv("KVTRIM_LLAMA_SRC")
	if src == "" {
		t.Skip("KVTRIM_LLAMA_SRC not set: checked against the committed table only")
	}
	if _, err := exec.LookPath("cc"); err != nil {
		t.Skip("no C compiler")
	}
	out := filepath.Join(t.TempDir(), "layout.txt")
	cmd := exec.Command("../native/gen-layout.sh", src, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen-layout: %v\n%s", err, b)
	}
	fresh := readLayout(t, out)
	committed := readLayout(t, layoutFile)
	if !reflect.DeepEqual(fresh, committed) {
		t.Fatalf("%s is stale: rerun native/gen-layout.sh %s", layoutFile, src)
	}
}
