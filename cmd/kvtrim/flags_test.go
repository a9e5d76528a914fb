package main

import (
	"testing"

	"github.com/spf13/pflag"
)

// TestNoRepackFlag: -nr and --no-repack, as llama.cpp spells them, reach
// the model's load settings (bindings' TestNoRepack checks what they do).
func TestNoRepackFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{{nil, false}, {[]string{"-nr"}, true}, {[]string{"--no-repack"}, true}, {[]string{"--repack"}, false}} {
		var g genFlags
		fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
		g.register(fs)
		if err := fs.Parse(normalizeArgs(fs, c.args)); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got := g.modelOptions().NoRepack; got != c.want {
			t.Errorf("%v: NoRepack %v, want %v", c.args, got, c.want)
		}
	}
}
