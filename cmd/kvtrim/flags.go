package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/kvtrim/kvtrim"
	"github.com/kvtrim/kvtrim/bindings"
)

// longSingleDash are llama.cpp's multi-letter flags written with one dash,
// and the long names kvtrim registers for them.
var longSingleDash = map[string]string{
	"ngl":  "n-gpu-layers",
	"nr":   "no-repack",
	"ub":   "ubatch-size",
	"fa":   "flash-attn",
	"np":   "parallel",
	"ctk":  "cache-type-k",
	"ctv":  "cache-type-v",
	"cram": "cache-ram",
	"sps":  "slot-prompt-similarity",
}

// normalizeArgs rewrites llama.cpp's single-dash multi-letter flags, such as
// -ngl 99 or -ub=256, into the --long form pflag parses. Only names the flag
// set knows (directly or through longSingleDash) are rewritten, so grouped
// one-letter shorthands keep working.
func normalizeArgs(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, value, hasValue := strings.Cut(a[1:], "=")
			if long, ok := longSingleDash[name]; ok && fs.Lookup(long) != nil {
				name = long
			}
			if len(name) > 1 && fs.Lookup(name) != nil {
				a = "--" + name
				if hasValue {
					a += "=" + value
				}
			}
		}
		out = append(out, a)
	}
	return out
}

// common holds the flags every command has.
type common struct {
	lib       string
	logFormat string
	verbose   int
	logFile   string
	logCloser io.Closer
}

func (c *common) register(fs *pflag.FlagSet) {
	fs.StringVar(&c.lib, "lib", "", "libllama file or folder (default: KVTRIM_LIB, then PATH, the usual prefixes, kvtrim's cache)")
	fs.StringVar(&c.logFormat, "log-format", "console", "log format: console or json")
	fs.CountVarP(&c.verbose, "verbose", "v", "more logging: -v shows llama.cpp's own log, -vv its debug lines")
	fs.StringVar(&c.logFile, "log-file", "", "write logs to this file instead of stderr")
}

// logger builds the zerolog logger the flags ask for. Logs go to stderr (or
// --log-file); stdout carries only a command's output.
func (c *common) logger(stderr io.Writer) (zerolog.Logger, error) {
	w := stderr
	if c.logFile != "" {
		f, err := os.OpenFile(c.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return zerolog.Logger{}, fmt.Errorf("open log file: %w", err)
		}
		c.logCloser = f
		w = f
	}
	level := zerolog.InfoLevel
	switch {
	case c.verbose == 1:
		level = zerolog.DebugLevel
	case c.verbose >= 2:
		level = zerolog.TraceLevel
	}
	switch c.logFormat {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05", NoColor: !isTerminal(w)}
	default:
		return zerolog.Logger{}, usageErrorf("--log-format %q: use console or json", c.logFormat)
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

// open validates g (when given), builds the logger the flags ask for and
// opens libllama, fetching the pinned build first if fetch is set and none
// is installed. The caller defers c.close().
func (c *common) open(ctx context.Context, g *genFlags, stderr io.Writer, fetch bool) (zerolog.Logger, *bindings.Library, error) {
	if g != nil {
		if err := g.validate(); err != nil {
			return zerolog.Logger{}, nil, err
		}
	}
	log, err := c.logger(stderr)
	if err != nil {
		return log, nil, err
	}
	lib, err := kvtrim.OpenLibrary(ctx, kvtrim.LibraryOptions{Path: c.lib, Fetch: fetch, Log: log})
	if err == nil && g != nil && g.rpc != "" {
		err = lib.AddRPCServers(bindings.ParseRPCEndpoints(g.rpc))
	}
	return log, lib, err
}

// openModel is open, then loads g's model; the caller closes the model.
func (c *common) openModel(ctx context.Context, g *genFlags, stderr io.Writer) (zerolog.Logger, *kvtrim.Model, error) {
	log, lib, err := c.open(ctx, g, stderr, false)
	if err != nil {
		return log, nil, err
	}
	model, err := kvtrim.LoadModel(lib, g.model, g.modelOptions(), log)
	return log, model, err
}

func (c *common) close() {
	if c.logCloser != nil {
		c.logCloser.Close()
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// parseFlags parses args after normalising llama.cpp's spellings, turning
// pflag's errors into usage errors and --help into errHelp.
func parseFlags(fs *pflag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	fs.SetInterspersed(true)
	if err := fs.Parse(normalizeArgs(fs, args)); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return errHelp
		}
		return usageError{err}
	}
	return nil
}

func newFlagSet(name, synopsis string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kvtrim %s\n\nflags:\n%s", synopsis, fs.FlagUsages())
	}
	return fs
}

// progressTerm is where a progress bar is drawn: stderr when it is a
// terminal and logs are for people (console), else nil for log lines.
func (c *common) progressTerm(stderr io.Writer) io.Writer {
	if c.logFormat == "json" || !isTerminal(stderr) {
		return nil
	}
	return stderr
}
