package bindings

import "fmt"

// Release is what kvtrim knows of one llama.cpp release: the version
// llama_version() reports, the default parameters its structs hold
// (compared at load, so that a changed layout is caught even when the
// version string looks right), and the layout table its Go mirrors were
// checked against (layout_test.go). Supporting another release is one
// more Release, in a file of its own, and its layout table, plus whatever
// of its structs or formats differs; which release a library is, is
// chosen at load.
type Release struct {
	// Version is llama_version()'s, without its "-dev" suffix.
	Version string
	// Layout is the file in bindings/testdata that records the struct
	// layout of the release's llama.h, as layout_test.go checks it.
	Layout string
	// Defaults lists what the default-params calls must return.
	Defaults func(m ModelParams, c ContextParams, s SamplerChainParams) []DefaultCheck
}

// DefaultCheck is one default parameter: what the call gave, what the
// release gives.
type DefaultCheck struct {
	Name      string
	Got, Want any
}

// releases are the llama.cpp releases kvtrim supports, newest first.
var releases = []*Release{release050}

// releaseOf is the supported release a llama_version() string names.
func releaseOf(version string) (*Release, bool) {
	for _, r := range releases {
		if version == r.Version || len(version) > len(r.Version) && version[:len(r.Version)+1] == r.Version+"-" {
			return r, true
		}
	}
	return nil, false
}

// check compares the library's default parameters with the release's.
func (r *Release) check(l *Library) error {
	for _, ch := range r.Defaults(l.fn.llamaModelDefaultParams(), l.fn.llamaContextDefaultParams(), l.fn.llamaSamplerChainDefaultParams()) {
		if ch.Got != ch.Want {
			return fmt.Errorf("default %s is %v (llama.cpp %s's is %v)", ch.Name, ch.Got, r.Version, ch.Want)
		}
	}
	return nil
}
