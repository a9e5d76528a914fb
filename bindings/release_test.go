package bindings

import "testing"

// TestReleaseOf: a llama_version() string picks its release's
// descriptor, with or without a suffix after a dash, and nothing else
// does.
func TestReleaseOf(t *testing.T) {
	for v, want := range map[string]bool{"0.5.0": true, "0.5.0-dev": true, "0.5.01": false, "0.5": false, "0.4.0-dev": false, "": false} {
		r, ok := releaseOf(v)
		if ok != want || (ok && r != release050) {
			t.Errorf("%q: %v %v, want %v", v, r, ok, want)
		}
	}
}
