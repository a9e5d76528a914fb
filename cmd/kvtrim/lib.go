package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/native"
)

func cmdLib(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "fetch":
			return cmdLibFetch(ctx, args[1:], stdout, stderr)
		case "build":
			return cmdLibBuild(ctx, args[1:], stdout, stderr)
		}
	}
	fs := newFlagSet("lib", "lib [fetch|build] [flags]\n\n  lib        show the libllama kvtrim would use and where it looked\n  lib fetch  install the pinned prebuilt CPU libllama into kvtrim's cache (needs npm)\n  lib build  build the pinned llama.cpp source with CMake into kvtrim's cache")
	var c common
	c.register(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unknown lib command %q: use fetch or build", fs.Arg(0))
	}
	path, places := bindings.Locate(c.lib, bindings.OSEnv())
	fmt.Fprintln(stdout, "looked in:")
	for _, p := range places {
		mark := "  "
		if p.Found != "" {
			mark = "* "
		}
		fmt.Fprintf(stdout, "  %s%-18s %s\n", mark, p.Source, p.Path)
	}
	if path == "" {
		return fmt.Errorf("%w: %s", kvtrim.ErrNoLibrary, bindings.FetchHint)
	}
	lib, err := bindings.Load(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "libllama:  %s\n", lib.LlamaPath)
	fmt.Fprintf(stdout, "version:   llama.cpp %s, ggml %s (%s); kvtrim supports %s\n", lib.Version, lib.GGMLVersion, lib.GGMLCommit, bindings.SupportedVersion)
	fmt.Fprintf(stdout, "backends:  %s\n", strings.Join(lib.Backends(), ", "))
	for _, d := range lib.Devices() {
		fmt.Fprintf(stdout, "device:    %s (%s)\n", d.Name, d.Description)
	}
	fmt.Fprintf(stdout, "gpu offload: %v\n", lib.SupportsGPUOffload())
	return nil
}

func cmdLibFetch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lib fetch", "lib fetch [--dir DIR]")
	var c common
	c.register(fs)
	env := bindings.OSEnv()
	dir := fs.String("dir", bindings.CacheDir(env), "install into this folder")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	defer c.close()
	m, err := native.PinnedManifest()
	if err != nil {
		return err
	}
	path, err := native.Fetch(ctx, m, *dir, func(msg string) { log.Info().Str("into", *dir).Msg(msg) })
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, path)
	return nil
}

func cmdLibBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lib build", "lib build [--cuda] [--jobs N] [--dir DIR]")
	var c common
	c.register(fs)
	cuda := fs.Bool("cuda", false, "build the CUDA backend too (needs nvcc)")
	jobs := fs.Int("jobs", 0, "parallel compile jobs (0: all cores)")
	dir := fs.String("dir", bindings.CacheDir(bindings.OSEnv()), "install into this folder")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if err := native.Build(ctx, *dir, *cuda, *jobs, stderr); err != nil {
		return err
	}
	fmt.Fprintln(stdout, *dir)
	return nil
}

func cmdVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "version [--lib PATH]")
	var c common
	c.register(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "kvtrim %s (supports llama.cpp %s)\n", kvtrim.Version, bindings.SupportedVersion)
	path, _ := bindings.Locate(c.lib, bindings.OSEnv())
	if path == "" {
		fmt.Fprintf(stdout, "libllama: none found (%s)\n", bindings.FetchHint)
		return nil
	}
	lib, err := bindings.Load(path)
	if err != nil {
		fmt.Fprintf(stdout, "libllama: %s (unusable: %v)\n", path, err)
		return nil
	}
	fmt.Fprintf(stdout, "libllama: %s (llama.cpp %s, ggml %s)\n", lib.LlamaPath, lib.Version, lib.GGMLVersion)
	return nil
}
