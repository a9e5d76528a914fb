package policies

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The golden test replays every case of every *.json file in
// $KVTRIM_GOLDEN_DIR (default ../../shared/golden) as described in that
// folder's FORMAT.md, and checks every output field.

// goldenFormat is the only format version this test reads.
const goldenFormat = "kvtrim-golden/1"

// goldenFile is the top level of a golden file.
type goldenFile struct {
	Format string            `json:"format"`
	Kind   string            `json:"kind"`
	Seed   int64             `json:"seed"`
	Cases  []json.RawMessage `json:"cases"`
}

// goldenRunner checks one case of a kind.
type goldenRunner func(t *testing.T, raw json.RawMessage)

// runnerFor returns the runner of a golden kind, or nil for an unknown one.
func runnerFor(kind string) goldenRunner {
	switch kind {
	case "snapkv":
		return runSnapKVCase
	case "h2o_mask":
		return runH2OMaskCase
	case "h2o_decode":
		return runH2ODecodeCase
	case "streaming":
		return runStreamingCase
	}
	return nil
}

func TestGolden(t *testing.T) {
	dir := os.Getenv("KVTRIM_GOLDEN_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "golden")
	}
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatalf("listing %s: %v", dir, err)
	}
	if len(paths) == 0 {
		t.Fatalf("no *.json golden files in %s (set KVTRIM_GOLDEN_DIR)", dir)
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var f goldenFile
			if err := json.Unmarshal(data, &f); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if f.Format != goldenFormat {
				t.Fatalf("%s: format %q, this test reads %q", path, f.Format, goldenFormat)
			}
			run := runnerFor(f.Kind)
			if run == nil {
				t.Fatalf("%s: unknown kind %q", path, f.Kind)
			}
			if len(f.Cases) == 0 {
				t.Fatalf("%s: no cases", path)
			}
			failed := 0
			for i, raw := range f.Cases {
				var head struct {
					Name string `json:"name"`
				}
				if err := json.Unmarshal(raw, &head); err != nil {
					t.Fatalf("case %d: %v", i, err)
				}
				if !t.Run(fmt.Sprintf("%d_%s", i, head.Name), func(t *testing.T) { run(t, raw) }) {
					failed++
				}
			}
			t.Logf("%s (kind %s): %d cases checked, %d failed", filepath.Base(path), f.Kind, len(f.Cases), failed)
		})
	}
}

// decodeCase decodes a case or stops the test.
func decodeCase(t *testing.T, raw json.RawMessage, c any) {
	t.Helper()
	if err := json.Unmarshal(raw, c); err != nil {
		t.Fatalf("decoding case: %v", err)
	}
}

// tieRule is FORMAT.md's ties object.
type tieRule struct {
	Candidates []int `json:"candidates"`
	Take       int   `json:"take"`
}

// checkFloats compares float outputs with |got-want| <= 1e-6 + 1e-5*|want|
// and reports whether they match.
func checkFloats(t *testing.T, what string, got, want []float32) bool {
	t.Helper()
	return checkEach(t, what, got, want, func(g, w float32) bool {
		return math.Abs(float64(g)-float64(w)) <= 1e-6+1e-5*math.Abs(float64(w))
	})
}

// checkRows compares lists of index rows exactly and reports whether they
// match.
func checkRows(t *testing.T, what string, got, want [][]int) bool {
	t.Helper()
	return checkEach(t, what, got, want, slices.Equal[[]int])
}

// checkEach reports the elements of got that do not match want by same (the
// first three, then a count), and whether all match.
func checkEach[T any](t *testing.T, what string, got, want []T, same func(g, w T) bool) bool {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d elements, want %d", what, len(got), len(want))
		return false
	}
	bad := 0
	for i := range got {
		if same(got[i], want[i]) {
			continue
		}
		if bad < 3 {
			t.Errorf("%s[%d] = %v, want %v", what, i, got[i], want[i])
		}
		bad++
	}
	if bad > 3 {
		t.Errorf("%s: %d elements differ in all", what, bad)
	}
	return bad == 0
}

// checkSelection compares index outputs exactly, up to the tie rule when
// ties names candidates: got \ candidates must equal want \ candidates and
// got must hold take candidates. got must be ascending without repeats. It
// reports whether got is correct.
func checkSelection(t *testing.T, what string, got, want []int, ties *tieRule) bool {
	t.Helper()
	if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
		t.Errorf("%s = %v is not ascending without repeats", what, got)
		return false
	}
	if ties == nil || len(ties.Candidates) == 0 {
		if !slices.Equal(got, want) {
			t.Errorf("%s = %v, want %v", what, got, want)
			return false
		}
		return true
	}
	outside := func(s []int) []int {
		return slices.DeleteFunc(slices.Clone(s), func(j int) bool { return slices.Contains(ties.Candidates, j) })
	}
	gotOut, wantOut := outside(got), outside(want)
	if !slices.Equal(gotOut, wantOut) || len(got)-len(gotOut) != ties.Take {
		t.Errorf("%s = %v, want %v with %d of the tied %v", what, got, want, ties.Take, ties.Candidates)
		return false
	}
	return true
}

// flatten2 concatenates the rows of a 2-D array.
func flatten2[T any](a [][]T) []T {
	var out []T
	for _, row := range a {
		out = append(out, row...)
	}
	return out
}

// flatten3 concatenates a 3-D array in row-major order.
func flatten3[T any](a [][][]T) []T {
	var out []T
	for _, m := range a {
		out = append(out, flatten2(m)...)
	}
	return out
}
