package bindings

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestEveryReleaseLayout: every supported release has a layout table that
// parses, lays out the mirrored structs as structs.go does, and agrees
// with ModelParams and ContextParams on every field they share, in size
// and kind; and its parameter structs are whole words, as the calls that
// pass them need.
func TestEveryReleaseLayout(t *testing.T) {
	for _, r := range releases {
		table, err := readLayout(r.Layout)
		if err != nil {
			t.Errorf("%s: %v", r.Name, err)
			continue
		}
		if err := table.checkMirrors(); err != nil {
			t.Errorf("%s: %v", r.Name, err)
		}
		if err := table.checkFunctions(reflect.TypeFor[functions](), r.LegacySamplers); err != nil {
			t.Errorf("%s: %v", r.Name, err)
		}
		// The prototypes of the other flavour must differ, or the
		// flag is wrong.
		if err := table.checkFunctions(reflect.TypeFor[functions](), !r.LegacySamplers); err == nil {
			t.Errorf("%s: LegacySamplers %v, but the other prototypes match too", r.Name, r.LegacySamplers)
		}
		if len(table.structs) != len(mirrors)+2 {
			t.Errorf("%s: %d structs in %s, want %d", r.Name, len(table.structs), r.Layout, len(mirrors)+2)
		}
		for name, goType := range map[string]reflect.Type{"llama_model_params": reflect.TypeFor[ModelParams](), "llama_context_params": reflect.TypeFor[ContextParams]()} {
			s, ok := table.structs[name]
			if !ok {
				t.Errorf("%s: no %s", r.Name, name)
				continue
			}
			if err := s.checkParams(goType); err != nil {
				t.Errorf("%s: %v", r.Name, err)
			}
			// The fields kvtrim sets must exist in every release.
			for _, f := range []string{"n_gpu_layers", "n_ctx", "n_batch", "n_ubatch", "n_seq_max", "n_threads", "n_threads_batch", "flash_attn_type", "no_perf", "type_k", "type_v", "cb_eval", "cb_eval_user_data"} {
				if _, ok := s.Fields[f]; !ok && (name == "llama_context_params") != (f == "n_gpu_layers") {
					t.Errorf("%s: %s has no %s, which kvtrim sets", r.Name, name, f)
				}
			}
		}
	}
}

// TestParamsEncoding: decoding takes the fields a release has and leaves
// the others zero; encoding writes them back over the default bytes,
// keeps the bytes of fields kvtrim has no name for, and refuses a field
// the release lacks once it is set.
func TestParamsEncoding(t *testing.T) {
	table, err := readLayout(releaseB8390.Layout)
	if err != nil {
		t.Fatal(err)
	}
	s := table.structs["llama_model_params"]
	raw := make([]byte, s.Size)
	raw[s.Fields["n_gpu_layers"].Offset] = 7
	raw[s.Fields["use_mmap"].Offset] = 1 // no field in ModelParams
	var m ModelParams
	s.decode(raw, &m)
	if m.NGPULayers != 7 || m.LoadMode != 0 {
		t.Fatalf("decoded n_gpu_layers %d load_mode %d, want 7 and 0", m.NGPULayers, m.LoadMode)
	}
	m.NGPULayers = 99
	out := bytes.Clone(raw)
	if err := s.encode(out, m); err != nil {
		t.Fatal(err)
	}
	if out[s.Fields["n_gpu_layers"].Offset] != 99 || out[s.Fields["use_mmap"].Offset] != 1 {
		t.Errorf("encoded n_gpu_layers %d use_mmap %d, want 99 and 1", out[s.Fields["n_gpu_layers"].Offset], out[s.Fields["use_mmap"].Offset])
	}
	m.LoadMode = 2 // b8390 has no load_mode
	if err := s.encode(out, m); err == nil || !strings.Contains(err.Error(), "load_mode") {
		t.Errorf("setting a field b8390 lacks: %v, want an error naming load_mode", err)
	}
}

// TestParseLayoutRejects: a table with a short line or a field past its
// struct's end is refused.
func TestParseLayoutRejects(t *testing.T) {
	for _, bad := range []string{"s - 0 8 struct\ns a 0 4\n", "s - 0 8 struct\ns a 8 4 int32\n", "s a 0 4 int32\n"} {
		if _, err := parseLayout([]byte(bad)); err == nil {
			t.Errorf("%q: parsed", bad)
		}
	}
}

// TestLayoutTableIsCurrent regenerates the pinned release's table from its
// source when it is at hand (KVTRIM_LLAMA_SRC, as cloned by
// native/build-llama.sh) and a C compiler exists, so a stale table cannot
// hide a layout change.
func TestLayoutTableIsCurrent(t *testing.T) {
	src := os.Getenv("KVTRIM_LLAMA_SRC")
	if src == "" {
		t.Skip("KVTRIM_LLAMA_SRC not set: checked against the committed table only")
	}
	if _, err := exec.LookPath("cc"); err != nil {
		t.Skip("no C compiler")
	}
	out := filepath.Join(t.TempDir(), "layout.txt")
	cmd := exec.Command("../native/gen-layout.sh", src, "v"+SupportedVersion, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen-layout: %v\n%s", err, b)
	}
	fresh, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := layoutFiles.ReadFile("layouts/" + release050.Layout)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(withoutComments(fresh), withoutComments(committed)) {
		t.Fatalf("layouts/%s is stale: rerun native/gen-layout.sh %s v%s", release050.Layout, src, SupportedVersion)
	}
}

func withoutComments(b []byte) []byte {
	var out []byte
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte("#")) {
			out = append(out, line...)
		}
	}
	return out
}
