package bindings

import "testing"

// TestReleaseOf: a llama_version() string picks its release's
// descriptor, with or without a suffix after a dash, and nothing else
// does.
func TestReleaseOf(t *testing.T) {
	for v, want := range map[string]*Release{"0.5.0": release050, "0.5.0-dev": release050, "0.4.0-dev": release040, "0.5.01": nil, "0.5": nil, "0.3.0-dev": nil, "b8390": nil, "": nil} {
		r, ok := releaseOf(v)
		if ok != (want != nil) || r != want {
			t.Errorf("%q: %v %v, want %v", v, r, ok, want)
		}
	}
}

// TestReleaseByFingerprint: a library without llama_version() is the
// newest release whose fingerprint function it has, and the oldest when
// it has none of them.
func TestReleaseByFingerprint(t *testing.T) {
	for want, has := range map[*Release][]string{
		releaseB10361: {"llama_sampler_copy", "llama_model_ftype", "llama_n_rs_seq"},
		releaseB10068: {"llama_model_ftype", "llama_n_rs_seq"},
		releaseB9842:  {"llama_n_rs_seq"},
		releaseB8390:  {"llama_model_init_from_user"},
		nil:           {"llama_sampler_init_greedy"},
	} {
		got := releaseByFingerprint(func(s string) bool {
			for _, h := range has {
				if h == s {
					return true
				}
			}
			return false
		})
		if got != want {
			t.Errorf("with %v: %v, want %v", has, got, want)
		}
	}
}

// TestReleaseNamed: releases are found by name, with or without a v.
func TestReleaseNamed(t *testing.T) {
	for name, want := range map[string]*Release{"0.5.0": release050, "v0.4.0": release040, "b8390": releaseB8390, "b1": nil, "": nil} {
		if got, _ := ReleaseNamed(name); got != want {
			t.Errorf("%q: %v, want %v", name, got, want)
		}
	}
}
