package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/pflag"

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
		case "releases":
			for _, r := range bindings.Releases() {
				fmt.Fprintln(stdout, r.Name)
			}
			return nil
		}
	}
	fs := newFlagSet("lib", "lib [fetch|build] [flags]\n\n  lib        show the libllama kvtrim would use, where it looked, and the supported releases\n  lib fetch  install a supported release's prebuilt CPU libllama (or with --cuda its CUDA one) into kvtrim's cache (needs npm)\n  lib build  build a supported release's llama.cpp source with CMake into kvtrim's cache\n  lib releases  list the supported releases, newest first")
	var c common
	c.register(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unknown lib command %q: use fetch, build or releases", fs.Arg(0))
	}
	env := bindings.OSEnv()
	path, places := bindings.Locate(c.lib, env)
	fmt.Fprintln(stdout, "looked in:")
	for _, p := range places {
		mark := "  "
		if p.Found != "" {
			mark = "* "
		}
		fmt.Fprintf(stdout, "  %s%-18s %s\n", mark, p.Source, p.Path)
	}
	fmt.Fprintln(stdout, "supported releases (kvtrim lib fetch --version V):")
	for _, r := range bindings.Releases() {
		state := "not installed"
		if lib := installedRelease(env, r.Name); lib != "" {
			state = "installed in " + filepath.Dir(lib)
		}
		def := ""
		if r.Name == bindings.SupportedVersion {
			def = " (default)"
		}
		fmt.Fprintf(stdout, "  %-8s ggml %-7s %s%s\n", r.Name, r.GGML, state, def)
	}
	if cuda := bindings.CUDACacheDir(env); bindings.HasCUDA(cuda) {
		state := "its backends find what they need"
		if err := bindings.Preflight(cuda); err != nil {
			state = err.Error()
		}
		fmt.Fprintf(stdout, "CUDA libraries (kvtrim lib fetch --cuda): %s: %s\n", cuda, state)
	}
	if path == "" {
		return fmt.Errorf("%w: %s", kvtrim.ErrNoLibrary, bindings.FetchHint)
	}
	lib, err := bindings.Load(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "libllama:  %s\n", lib.LlamaPath)
	named := ""
	if lib.FileBuild != "" && lib.FileBuild != lib.Release.Name {
		named = ", its file name says " + lib.FileBuild
	}
	fmt.Fprintf(stdout, "version:   llama.cpp %s (release %s%s), ggml %s (%s)\n", lib.Version, lib.Release.Name, named, lib.GGMLVersion, lib.GGMLCommit)
	fmt.Fprintf(stdout, "backends:  %s\n", strings.Join(lib.Backends(), ", "))
	for _, d := range lib.Devices() {
		fmt.Fprintf(stdout, "device:    %s (%s)\n", d.Name, d.Description)
	}
	fmt.Fprintf(stdout, "gpu offload: %v\n", lib.SupportsGPUOffload())
	rpc := "no (kvtrim lib build --rpc)"
	if slices.Contains(lib.Backends(), "RPC") {
		rpc = "yes (--rpc host:port,...; ggml-rpc-server on each host, of the same build)"
	}
	fmt.Fprintf(stdout, "rpc:       %s\n", rpc)
	return nil
}

// installedRelease is the libllama of release in kvtrim's cache, if its
// manifest's files are there and intact.
func installedRelease(env bindings.Env, release string) string {
	m, err := native.ManifestFor(release)
	if err != nil {
		return ""
	}
	lib, _ := native.Installed(m, bindings.CacheDirFor(env, release))
	return lib
}

// releaseFlag registers --version, the supported release to fetch or build.
func releaseFlag(fs *pflag.FlagSet) *string {
	return fs.String("version", bindings.SupportedVersion, "the llama.cpp release: one of "+bindings.SupportedNames())
}

// chosenRelease checks --version and returns its manifest.
func chosenRelease(version string) (native.Manifest, error) {
	r, ok := bindings.ReleaseNamed(version)
	if !ok {
		return native.Manifest{}, usageErrorf("--version %s: kvtrim supports llama.cpp %s", version, bindings.SupportedNames())
	}
	return native.ManifestFor(r.Name)
}

func cmdLibFetch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lib fetch", "lib fetch [--version V] [--cuda] [--dir DIR]")
	var c common
	c.register(fs)
	env := bindings.OSEnv()
	version := releaseFlag(fs)
	cuda := fs.Bool("cuda", false, "the CUDA libraries (CUDA 13; the runtime and driver are not bundled), beside the CPU ones")
	dir := fs.String("dir", "", "install into this folder (default: kvtrim's cache for the release)")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	defer c.close()
	m, err := chosenRelease(*version)
	if err != nil {
		return err
	}
	if *cuda {
		if m, err = native.ManifestOf(m.Version, native.FlavorCUDA); err != nil {
			return err
		}
	}
	switch {
	case *dir != "":
	case *cuda:
		*dir = bindings.CUDACacheDirFor(env, m.Version)
	default:
		*dir = bindings.CacheDirFor(env, m.Version)
	}
	path, err := native.Fetch(ctx, m, *dir, func(msg string) { log.Info().Str("into", *dir).Msg(msg) })
	if err != nil {
		return err
	}
	if err := bindings.Preflight(*dir); err != nil {
		// Installed and verified, but this machine cannot use it (yet).
		log.Warn().Msg(err.Error())
	}
	fmt.Fprintln(stdout, path)
	return nil
}

func cmdLibBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lib build", "lib build [--version V] [--cuda] [--rpc] [--tools T,...] [--jobs N] [--dir DIR]")
	var c common
	c.register(fs)
	version := releaseFlag(fs)
	cuda := fs.Bool("cuda", false, "build the CUDA backend too (needs nvcc)")
	rpc := fs.Bool("rpc", false, "build ggml's RPC backend too, and ggml-rpc-server (serve a host's devices to --rpc)")
	tools := fs.StringSlice("tools", []string{"llama-completion", "llama-server", "llama-bench"}, "llama.cpp programs to build beside the libraries (none: --tools '')")
	jobs := fs.Int("jobs", 0, "parallel compile jobs (0: all cores)")
	dir := fs.String("dir", "", "install into this folder (default: kvtrim's cache for the release)")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	m, err := chosenRelease(*version)
	if err != nil {
		return err
	}
	if *dir == "" {
		*dir = bindings.CacheDirFor(bindings.OSEnv(), m.Version)
	}
	t := slices.DeleteFunc(slices.Clone(*tools), func(s string) bool { return s == "" })
	if t == nil {
		t = []string{}
	}
	if err := native.Build(ctx, native.BuildOptions{Dir: *dir, NodeLlamaCpp: m.NodeLlamaCpp(), CUDA: *cuda, RPC: *rpc, Tools: t, Jobs: *jobs}, stderr); err != nil {
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
	fmt.Fprintf(stdout, "kvtrim %s (supports llama.cpp %s)\n", kvtrim.Version, bindings.SupportedNames())
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
