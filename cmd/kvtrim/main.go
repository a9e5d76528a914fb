// Command kvtrim compresses the KV cache of an external llama.cpp.
//
//	kvtrim demo                       run the bundled tiny model
//	kvtrim run -m MODEL -p TEXT -n N  generate text
//	kvtrim lib [fetch|build]          find, fetch or build libllama
//	kvtrim version                    print versions
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
)

const usage = `kvtrim compresses the KV cache of your own llama.cpp.

usage: kvtrim <command> [flags]

commands:
  demo      generate with the bundled tiny model (fetches libllama if needed)
  run       generate text: kvtrim run -m MODEL -p TEXT -n N
  bench     speed of the full cache and a policy side by side: kvtrim bench -m MODEL --prompt-tokens N
  eval      accuracy of policies on retrieval tasks: kvtrim eval passkey|lines|recall -m MODEL; eval leaderboard of their reports
  serve     llama-server-compatible HTTP server: kvtrim serve -m MODEL --port 8080 [-np N] [--kv-policy snapkv]
  lib       show which libllama kvtrim would use; 'lib fetch', 'lib build'
  version   print kvtrim's version and the libllama it would use

Run 'kvtrim <command> --help' for a command's flags.
`

// exitUsage is the exit status for bad flags or arguments.
const exitUsage = 2

func main() {
	ctx, stop := interrupts(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := startProfile(os.Getenv("KVTRIM_CPUPROFILE"))
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	stop()
	os.Exit(code)
}

// interrupts returns a context cancelled by the first of signals that
// carries another (see forced) cancelled by the second: a command that
// finishes its work on the first, as kvtrim serve lets its running
// requests finish, stops at once on the second. After the second the
// signals have their default effect again, so a third ends the process
// whatever it is doing. stop ends the notification and cancels both.
func interrupts(parent context.Context, signals ...os.Signal) (ctx context.Context, stop func()) {
	force, stopForce := context.WithCancel(context.Background())
	ctx, cancel := context.WithCancel(context.WithValue(parent, forceKey{}, force))
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, signals...)
	done := make(chan struct{})
	go func() {
		defer signal.Stop(ch)
		for _, next := range []func(){cancel, stopForce} {
			select {
			case <-ch:
				next()
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() { close(done) })
		signal.Stop(ch)
		cancel()
		stopForce()
	}
}

// forceKey is the key of the context a second interrupt cancels.
type forceKey struct{}

// forced is the context a second interrupt cancels (see interrupts), or,
// outside one, a context never cancelled.
func forced(ctx context.Context) context.Context {
	if force, ok := ctx.Value(forceKey{}).(context.Context); ok {
		return force
	}
	return context.Background()
}

// startProfile writes a Go CPU profile of the whole command to path when
// it is set (KVTRIM_CPUPROFILE, for kvtrim's engineers) and returns the
// function that finishes it.
func startProfile(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kvtrim: KVTRIM_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// run executes one command and returns the process exit status. It never
// lets a panic escape as a stack trace: that would be a bug in kvtrim, and is
// reported in one line (the stack goes to the log at debug level).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "kvtrim: internal error: %v (please report it; rerun with -v for details)\n", r)
			if os.Getenv("KVTRIM_DEBUG") != "" {
				stderr.Write(debug.Stack())
			}
			code = 3
		}
	}()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"run":     cmdRun,
		"demo":    cmdDemo,
		"lib":     cmdLib,
		"version": cmdVersion,
		"eval":    cmdEval,
		"bench":   cmdBench,
		"serve":   cmdServe,
		// Not in the usage text: a tool for benchmarks.
		"random-model": cmdRandomModel,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "kvtrim: unknown command %q: run 'kvtrim --help' for the list\n", args[0])
		return exitUsage
	}
	err := cmd(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errHelp):
		return 0
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "kvtrim: interrupted")
		return 130
	}
	fmt.Fprintf(stderr, "kvtrim %s: %s\n", args[0], oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return 1
}

// oneLine folds a multi-line message onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// usageError marks errors in flags or arguments.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

var errHelp = errors.New("help shown")
