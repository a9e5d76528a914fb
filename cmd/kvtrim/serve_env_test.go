package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// envList is the committed list of llama-server's environment variables.
const envList = "../../testdata/serve/llama-server-env.txt"

// llamaServerVar is one line of envList: a variable and its flag's
// spellings, dashes included.
type llamaServerVar struct {
	name  string
	flags []string
}

func readEnvList(t *testing.T, text string) []llamaServerVar {
	t.Helper()
	var vars []llamaServerVar
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		name, flags, ok := strings.Cut(line, " ")
		if !ok || name == "" || flags == "" {
			t.Fatalf("%s:%d: %q is not NAME FLAGS", envList, i+1, line)
		}
		vars = append(vars, llamaServerVar{name, strings.Split(flags, ",")})
	}
	return vars
}

// readRecorded reads a list recorded from llama-server's --help by a
// script of testdata/serve, and, with KVTRIM_LLAMA_BIN naming a folder
// holding llama-server, checks it against that binary's --help (a "live"
// subtest).
func readRecorded(t *testing.T, list, script string) []byte {
	t.Helper()
	b, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("live", func(t *testing.T) {
		bin := os.Getenv("KVTRIM_LLAMA_BIN")
		if bin == "" {
			t.Skip("KVTRIM_LLAMA_BIN is not set: not comparing with llama-server --help")
		}
		out, err := exec.Command("sh", "../../testdata/serve/"+script, bin).Output()
		if err != nil {
			t.Fatalf("%s %s: %v", script, bin, err)
		}
		if string(out) != string(b) {
			t.Errorf("llama-server in %s documents another list than %s (regenerate it with testdata/serve/%s):\n%s",
				bin, list, script, diffLines(string(b), string(out)))
		}
	})
	return b
}

// envLookup looks names up in m.
func envLookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// TestServeEnvironmentList: every variable llama-server 0.5.0 documents in
// its --help is filled into kvtrim serve's flag or refused by name, as
// the flag is on the command line. With KVTRIM_LLAMA_BIN naming a folder
// holding llama-server, the committed list is checked against its --help.
func TestServeEnvironmentList(t *testing.T) {
	b := readRecorded(t, envList, "record-env.sh")
	vars := readEnvList(t, string(b))
	if len(vars) < 100 {
		t.Fatalf("%s lists %d variables: too few to be llama-server's", envList, len(vars))
	}
	table := map[string]llamaVar{}
	for _, e := range llamaEnv() {
		if _, dup := table[e.name]; dup {
			t.Errorf("llamaEnv lists %s twice", e.name)
		}
		table[e.name] = e
	}
	fs, _, _ := serveFlagSet()
	documented := map[string]bool{}
	for _, v := range vars {
		documented[v.name] = true
		e, ok := table[v.name]
		if !ok {
			t.Errorf("%s (%s) is not read by kvtrim serve", v.name, strings.Join(v.flags, ", "))
			continue
		}
		if !slices.Contains(v.flags, "--"+e.flag) || e.neg != "" && !slices.Contains(v.flags, "--"+e.neg) {
			t.Errorf("%s is --%s (--%s) in llamaEnv, %s in llama-server's help", v.name, e.flag, e.neg, strings.Join(v.flags, ", "))
		}
		// A boolean with a negative spelling (--slots, --no-slots) has an
		// LLAMA_ARG_NO_ twin; --no-host alone does not.
		hasNeg := slices.ContainsFunc(v.flags, isNegFlag) && slices.ContainsFunc(v.flags, func(f string) bool { return !isNegFlag(f) })
		if hasNeg != (e.neg != "") {
			t.Errorf("%s: negative flag %q in llamaEnv, llama-server has %s", v.name, e.neg, strings.Join(v.flags, ", "))
		}
		// Each of the flag and its negative is a flag of kvtrim serve: its
		// own, or one it takes without implementing (llamaFlags).
		for _, flag := range []string{e.flag, e.neg} {
			if flag != "" && fs.Lookup(flag) == nil {
				t.Errorf("%s (--%s): kvtrim serve has no such flag", v.name, flag)
			}
		}
		checkEnvBehaviour(t, v.name, e)
	}
	for name := range table {
		// LLAMA_ARG_RPC is in the help of a build with ggml's RPC backend
		// only, which the recorded one is not.
		if !documented[name] && name != "LLAMA_ARG_API_KEY" && name != "LLAMA_ARG_NO_WEBUI" && name != "LLAMA_ARG_RPC" {
			t.Errorf("llamaEnv lists %s, which llama-server does not document", name)
		}
	}
}

// isNegFlag reports whether a spelling is a negative one (--no-slots).
func isNegFlag(f string) bool {
	return strings.HasPrefix(f, "--no-") || strings.HasPrefix(f, "-no-") || f == "-nkvo" || f == "-nr" || f == "-nocb"
}

// checkEnvBehaviour sets name (and its LLAMA_ARG_NO_ twin) alone and
// checks that it fills e's flag (HF_TOKEN aside: it is not read).
func checkEnvBehaviour(t *testing.T, name string, e llamaVar) {
	t.Helper()
	try := func(env map[string]string) (changed []string, err error) {
		fs, _, _ := serveFlagSet()
		err = fromEnv(fs, envLookup(env))
		fs.Visit(func(f *pflag.Flag) { changed = append(changed, f.Name) })
		return changed, err
	}
	fs, _, _ := serveFlagSet()
	changed, err := try(map[string]string{name: "1"})
	switch {
	case name == hfToken:
		if err != nil || len(changed) > 0 {
			t.Errorf("%s=1: %v, changed %v: want it ignored", name, err, changed)
		}
	default:
		want := fs.Lookup(e.flag).Name // as normalised: --webui is --ui
		if err != nil || !slices.Contains(changed, want) {
			t.Errorf("%s=1: %v, changed %v: want --%s", name, err, changed, want)
		}
	}
	if e.neg == "" {
		return
	}
	twin := e.noName()
	changed, err = try(map[string]string{twin: "", name: "1"}) // set, even empty, the twin wins
	if want := fs.Lookup(e.neg).Name; err != nil || !slices.Equal(changed, []string{want}) {
		t.Errorf("%s: %v, changed %v, want --%s", twin, err, changed, want)
	}
}

// TestServeEnvironmentAPIKey: LLAMA_API_KEY, llama-server's variable for
// --api-key, makes kvtrim serve require the key; the command line wins.
func TestServeEnvironmentAPIKey(t *testing.T) {
	env := map[string]string{"LLAMA_ARG_MODEL": "m.gguf", "LLAMA_API_KEY": "k"}
	_, _, cfg, err := parseServe(nil, envLookup(env), io.Discard)
	if err != nil || !slices.Equal(cfg.APIKeys, []string{"k"}) {
		t.Errorf("LLAMA_API_KEY=k: keys %q, %v; want [k]", cfg.APIKeys, err)
	}
	_, _, cfg, err = parseServe([]string{"--api-key", "flag"}, envLookup(env), io.Discard)
	if err != nil || !slices.Equal(cfg.APIKeys, []string{"flag"}) {
		t.Errorf("--api-key flag with LLAMA_API_KEY=k: keys %q, %v; want [flag]", cfg.APIKeys, err)
	}
	// The two add up, as in llama-server: they are two flags.
	file := filepath.Join(t.TempDir(), "keys")
	os.WriteFile(file, []byte("f1\n"), 0o600)
	_, _, cfg, err = parseServe([]string{"--api-key-file", file}, envLookup(env), io.Discard)
	if err != nil || !slices.Equal(cfg.APIKeys, []string{"k", "f1"}) {
		t.Errorf("--api-key-file with LLAMA_API_KEY=k: keys %q, %v; want [k f1]", cfg.APIKeys, err)
	}
}

// TestServeEnvironmentBooleans: boolean variables are read with
// llama.cpp's rules (common/arg.cpp): on, enabled, true, 1 and off,
// disabled, false, 0, exactly; a flag without a value takes a true value
// and ignores the rest; a boolean with a negative flag refuses any other
// value, and its LLAMA_ARG_NO_ twin, set at all, means false.
func TestServeEnvironmentBooleans(t *testing.T) {
	type want struct {
		metrics, slots, noWebUI bool
		err                     string
		given                   string // the one llamaFlags flag given
	}
	for _, c := range []struct {
		env  map[string]string
		args []string
		want want
	}{
		{map[string]string{}, nil, want{slots: true}},
		{map[string]string{"LLAMA_ARG_ENDPOINT_METRICS": "1"}, nil, want{metrics: true, slots: true}},
		{map[string]string{"LLAMA_ARG_ENDPOINT_METRICS": "enabled"}, nil, want{metrics: true, slots: true}},
		{map[string]string{"LLAMA_ARG_ENDPOINT_METRICS": "yes"}, nil, want{slots: true}}, // not a true value: nothing
		{map[string]string{"LLAMA_ARG_ENDPOINT_METRICS": "ON"}, nil, want{slots: true}},
		{map[string]string{"LLAMA_ARG_ENDPOINT_METRICS": "off"}, nil, want{slots: true}},
		{map[string]string{"LLAMA_ARG_ENDPOINT_SLOTS": "disabled"}, nil, want{}},
		{map[string]string{"LLAMA_ARG_ENDPOINT_SLOTS": "0"}, nil, want{}},
		{map[string]string{"LLAMA_ARG_ENDPOINT_SLOTS": "true"}, nil, want{slots: true}},
		{map[string]string{"LLAMA_ARG_ENDPOINT_SLOTS": "yes"}, nil, want{err: `LLAMA_ARG_ENDPOINT_SLOTS="yes": invalid boolean value`}},
		{map[string]string{"LLAMA_ARG_NO_ENDPOINT_SLOTS": ""}, nil, want{}},
		{map[string]string{"LLAMA_ARG_NO_ENDPOINT_SLOTS": "1", "LLAMA_ARG_ENDPOINT_SLOTS": "1"}, nil, want{}},
		{map[string]string{"LLAMA_ARG_NO_ENDPOINT_SLOTS": "0"}, nil, want{}}, // set is enough
		{map[string]string{"LLAMA_ARG_NO_ENDPOINT_SLOTS": "1"}, []string{"--slots"}, want{slots: true}},
		{map[string]string{"LLAMA_ARG_ENDPOINT_SLOTS": "1"}, []string{"--no-slots"}, want{}},
		{map[string]string{"LLAMA_ARG_UI": "off"}, nil, want{slots: true, noWebUI: true}},
		{map[string]string{"LLAMA_ARG_NO_UI": "1"}, nil, want{slots: true, noWebUI: true}},
		{map[string]string{"LLAMA_ARG_UI": "on"}, nil, want{slots: true, given: "--ui"}},
		{map[string]string{"LLAMA_ARG_UI": "on"}, []string{"--no-webui"}, want{slots: true, noWebUI: true}},
		{map[string]string{"LLAMA_ARG_CONT_BATCHING": "1"}, nil, want{slots: true, given: "--cont-batching"}},
		{map[string]string{"LLAMA_ARG_CONT_BATCHING": "0"}, nil, want{slots: true, given: "--no-cont-batching"}},
		{map[string]string{"LLAMA_ARG_NO_CONT_BATCHING": "1"}, nil, want{slots: true, given: "--no-cont-batching"}},
		{map[string]string{"LLAMA_ARG_EMBEDDINGS": "1"}, nil, want{slots: true, given: "--embedding"}},
		{map[string]string{"LLAMA_ARG_NO_HOST": "1"}, nil, want{slots: true, given: "--no-host"}},
		{map[string]string{"HF_TOKEN": "hf_x"}, nil, want{slots: true}},
	} {
		env := map[string]string{"LLAMA_ARG_MODEL": "m.gguf"}
		for k, v := range c.env {
			env[k] = v
		}
		f, _, cfg, err := parseServe(c.args, envLookup(env), io.Discard)
		switch {
		case c.want.err != "":
			if err == nil || !strings.Contains(err.Error(), c.want.err) {
				t.Errorf("%v %v: %v, want %q", c.env, c.args, err, c.want.err)
			}
		case err != nil:
			t.Errorf("%v %v: %v", c.env, c.args, err)
		case cfg.Metrics != c.want.metrics || cfg.Slots != c.want.slots || f.noWebUI != c.want.noWebUI:
			t.Errorf("%v %v: metrics %v slots %v no-webui %v, want %+v", c.env, c.args, cfg.Metrics, cfg.Slots, f.noWebUI, c.want)
		default:
			var given []string
			for _, l := range f.accepted.given() {
				given = append(given, l.flagName())
			}
			if want := slices.DeleteFunc([]string{c.want.given}, func(s string) bool { return s == "" }); !slices.Equal(given, want) {
				t.Errorf("%v %v: given %v, want %v", c.env, c.args, given, want)
			}
		}
	}
	// The sampling defaults, read now.
	env := map[string]string{"LLAMA_ARG_MODEL": "m.gguf", "LLAMA_ARG_TEMPERATURE": "0", "LLAMA_ARG_TOP_K": "5",
		"LLAMA_ARG_TOP_P": "0.5", "LLAMA_ARG_MIN_P": "0.25"}
	_, _, cfg, err := parseServe(nil, envLookup(env), io.Discard)
	if s := cfg.Sampling; err != nil || s.Temp != 0 || s.TopK != 5 || s.TopP != 0.5 || s.MinP != 0.25 {
		t.Errorf("sampling from the environment: %+v, %v", s, err)
	}
}

// TestServeTakesLlamaServerEnvironment: a variable of a flag kvtrim serve
// does not implement is taken as the flag is, and the server logs that it
// is not applied; TLS's is refused in one line, before anything loads.
func TestServeTakesLlamaServerEnvironment(t *testing.T) {
	for _, c := range []struct{ env, log string }{
		{"LLAMA_ARG_CONT_BATCHING=1", "INF accepted, changes nothing: kvtrim serve always batches"},
		{"LLAMA_ARG_THREADS_HTTP=4", "INF accepted, changes nothing: Go's HTTP server takes every connection"},
		{"LLAMA_ARG_MMPROJ=mm.gguf", "WRN not applied: kvtrim serve takes text only"},
	} {
		r := runKvtrim(t, append(os.Environ(), c.env), "serve", "-m", "/no/such/model.gguf")
		// It logs the flag and gets as far as the model.
		if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); r.code == 0 || !strings.Contains(lines[0], c.log) ||
			!strings.Contains(lines[len(lines)-1], "load model /no/such/model.gguf") {
			t.Errorf("%s: exit %d, stderr:\n%s", c.env, r.code, r.stderr)
		}
	}
	r := runKvtrim(t, append(os.Environ(), "LLAMA_ARG_SSL_CERT_FILE=c.pem"), "serve", "-m", "/no/such/model.gguf")
	wantOneLineError(t, r, "--ssl-cert-file: kvtrim serve has no TLS")
	if r.code != exitUsage {
		t.Errorf("TLS: exit %d, want %d", r.code, exitUsage)
	}
}

// TestServeAPIKeyFile: the file is read as llama-server reads it: a line
// is a key as it stands, unless empty or a comment starting with "#".
func TestServeAPIKeyFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "keys")
	os.WriteFile(file, []byte("# team keys, rotate monthly\nk1\n\n  k2 \n#k3\n # k4\nk5"), 0o600)
	env := map[string]string{"LLAMA_ARG_MODEL": "m.gguf"}
	_, _, cfg, err := parseServe([]string{"--api-key-file", file}, envLookup(env), io.Discard)
	if want := []string{"k1", "  k2 ", " # k4", "k5"}; err != nil || !slices.Equal(cfg.APIKeys, want) {
		t.Errorf("keys %q, %v; want %q", cfg.APIKeys, err, want)
	}
	comments := filepath.Join(dir, "comments")
	os.WriteFile(comments, []byte("# no key yet\n\n#\n"), 0o600)
	if _, _, _, err := parseServe([]string{"--api-key-file", comments}, envLookup(env), io.Discard); err == nil || !strings.Contains(err.Error(), "holds no key") {
		t.Errorf("a file of comments: %v, want it refused", err)
	}
}

// diffLines lists the lines only in a (-) and only in b (+).
func diffLines(a, b string) string {
	as, bs := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for _, l := range as {
		if !slices.Contains(bs, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range bs {
		if !slices.Contains(as, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}
