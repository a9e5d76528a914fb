package bindings

import (
	"fmt"
	"strings"
)

// Release is what kvtrim knows of one llama.cpp release: how to recognise
// it, where its structs lie (its layout table, generated from its
// headers), what its default-params calls return, and how it saves a
// sequence's state. Supporting another release is one more Release, in a
// file of its own, and its layout table; the library picks its Release at
// load (identify).
type Release struct {
	// Name is the release as kvtrim names it: llama_version()'s report
	// ("0.5.0") or, before that function existed, the build ("b8390").
	Name string
	// Version is llama_version()'s report without its "-dev" suffix;
	// empty for a release without llama_version().
	Version string
	// Fingerprint, for a release without llama_version(), is a function
	// it has that the releases before it lack. Releases are told apart by
	// the newest fingerprint present; a library with none is older than
	// every supported release.
	Fingerprint string
	// GGML is the version its libggml reports (ggml_version()). A
	// libggml-base of another version is refused: ggml's structs and
	// backends change with it.
	GGML string
	// Layout is its table in bindings/layouts (native/gen-layout.sh).
	Layout string
	// StateHeader is whether llama_state_seq_get_data starts with a magic
	// and the sequence id (every release after b8390).
	StateHeader bool
	// StateOnDevice is whether its LLAMA_STATE_SEQ_FLAGS_ON_DEVICE round
	// trip works. b8390 has no such flag; in b9842 to b10361 loading a
	// sequence saved with it aborts the process ("llama_io_read_device:
	// memory buffer mismatch") once the sequence has had cells removed.
	// Without it, states are copied through host memory.
	StateOnDevice bool
	// LegacySamplers is whether its llama_sampler_init_dry takes
	// n_ctx_train after the vocabulary and its llama_sampler_init_penalties
	// no n_vocab, as up to b10068.
	LegacySamplers bool
	// SeqFileVersion is its LLAMA_STATE_SEQ_VERSION: the version of the
	// sequence state files it saves and loads.
	SeqFileVersion uint32
	// Defaults lists what its default-params calls must return.
	Defaults func(m ModelParams, c ContextParams, s SamplerChainParams) []DefaultCheck
}

// DefaultCheck is one default parameter: what the call gave, what the
// release gives.
type DefaultCheck struct {
	Name      string
	Got, Want any
}

// releases are the llama.cpp releases kvtrim supports, newest first.
var releases = []*Release{release050, release040, releaseB10361, releaseB10068, releaseB9842, releaseB8390}

// Releases returns the llama.cpp releases kvtrim supports, newest first.
func Releases() []*Release { return append([]*Release(nil), releases...) }

// SupportedNames lists the supported releases for a message: "0.5.0,
// 0.4.0, ...".
func SupportedNames() string {
	names := make([]string, len(releases))
	for i, r := range releases {
		names[i] = r.Name
	}
	return strings.Join(names, ", ")
}

// ReleaseNamed returns the supported release called name ("0.5.0",
// "v0.5.0", "b8390").
func ReleaseNamed(name string) (*Release, bool) {
	name = strings.TrimPrefix(name, "v")
	for _, r := range releases {
		if r.Name == name {
			return r, true
		}
	}
	return nil, false
}

// releaseOf is the supported release a llama_version() string names.
func releaseOf(version string) (*Release, bool) {
	for _, r := range releases {
		if r.Version == "" {
			continue
		}
		if version == r.Version || strings.HasPrefix(version, r.Version+"-") {
			return r, true
		}
	}
	return nil, false
}

// releaseByFingerprint is the release without llama_version() whose
// fingerprint is the newest one has reports present: has(symbol).
func releaseByFingerprint(has func(symbol string) bool) *Release {
	for _, r := range releases {
		if r.Version == "" && has(r.Fingerprint) {
			return r
		}
	}
	return nil
}

// check compares the library's default parameters with the release's.
func (r *Release) check(m ModelParams, c ContextParams, s SamplerChainParams) error {
	for _, ch := range r.Defaults(m, c, s) {
		if ch.Got != ch.Want {
			return fmt.Errorf("default %s is %v (llama.cpp %s's is %v)", ch.Name, ch.Got, r.Name, ch.Want)
		}
	}
	return nil
}

// baseDefaults are the defaults every supported release shares.
func baseDefaults(m ModelParams, c ContextParams, s SamplerChainParams) []DefaultCheck {
	return []DefaultCheck{
		{"model n_gpu_layers", m.NGPULayers, int32(-1)},
		{"model split_mode", m.SplitMode, int32(1)},
		{"model use_extra_bufts", m.UseExtraBufts, true},
		{"model vocab_only", m.VocabOnly, false},
		{"context n_ctx", c.NCtx, uint32(512)},
		{"context n_batch", c.NBatch, uint32(2048)},
		{"context n_ubatch", c.NUbatch, uint32(512)},
		{"context n_seq_max", c.NSeqMax, uint32(1)},
		{"context flash_attn_type", c.FlashAttnType, FlashAttnAuto},
		{"context type_k", c.TypeK, int32(1)},
		{"context type_v", c.TypeV, int32(1)},
		{"context offload_kqv", c.OffloadKQV, true},
		{"context no_perf", c.NoPerf, true},
		{"context yarn_attn_factor", c.YarnAttnFactor, float32(-1)},
		{"context cb_eval", c.CbEval, uintptr(0)},
		{"sampler no_perf", s.NoPerf, true},
	}
}
