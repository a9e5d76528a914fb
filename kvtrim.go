// Package kvtrim compresses the KV cache of an external llama.cpp. This root
// package is its public Go API: find and open the user's libllama, load a
// model, make a Session (or a Group of sessions that decode together),
// prefill a prompt, generate with a sampler, and read the timings and cache
// statistics.
//
//	lib, err := kvtrim.OpenLibrary(ctx, kvtrim.LibraryOptions{Fetch: true})
//	model, err := kvtrim.LoadModel(lib, "model.gguf", kvtrim.ModelOptions{GPULayers: -1}, log)
//	s, err := model.NewSession(kvtrim.SessionOptions{NCtx: 4096, Compression: kvtrim.Compression{Policy: "snapkv", Ratio: 0.1}})
//	tokens, err := s.Tokenize(prompt)
//	err = s.Prefill(ctx, tokens)
//	err = s.Generate(ctx, sampler, kvtrim.GenerateOptions{MaxTokens: 128}, func(t kvtrim.Token, piece string) error { ... })
//	stats := s.Stats()
package kvtrim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"

	"github.com/kvtrim/kvtrim/bindings"
	"github.com/kvtrim/kvtrim/native"
)

// Version is kvtrim's own version.
const Version = "0.1.0-dev"

// LibraryOptions say where to look for libllama and what to do if it is missing.
type LibraryOptions struct {
	// Path is a libllama file or a folder holding one (the --lib flag).
	// Empty: search as bindings.Locate does.
	Path string
	// Fetch installs the pinned prebuilt libllama into kvtrim's cache when
	// no library is found anywhere.
	Fetch bool
	// Log receives kvtrim's messages and llama.cpp's log lines.
	Log zerolog.Logger
}

// ErrNoLibrary means no libllama was found and none was fetched.
var ErrNoLibrary = errors.New("no libllama found")

// OpenLibrary finds, (if asked) fetches, and loads libllama.
func OpenLibrary(ctx context.Context, opt LibraryOptions) (*bindings.Library, error) {
	env := bindings.OSEnv()
	path, places := bindings.Locate(opt.Path, env)
	if path == "" && opt.Path == "" && env.Getenv("KVTRIM_LIB") == "" && opt.Fetch {
		opt.Log.Info().Msg("no libllama found: fetching the pinned build (kvtrim lib fetch)")
		var err error
		if path, err = FetchLibrary(ctx, env, opt.Log); err != nil {
			return nil, err
		}
	}
	if path == "" {
		return nil, noLibraryError(places)
	}
	lib, err := bindings.Load(path)
	if err != nil {
		return nil, err
	}
	lib.SetLogger(opt.Log)
	opt.Log.Debug().Str("lib", lib.LlamaPath).Str("version", lib.Version).Strs("backends", lib.Backends()).Msg("loaded libllama")
	return lib, nil
}

func noLibraryError(places []bindings.Place) error {
	looked := make([]string, 0, len(places))
	for _, p := range places {
		looked = append(looked, p.Path)
	}
	return fmt.Errorf("%w (looked in %s): %s", ErrNoLibrary, strings.Join(looked, ", "), bindings.FetchHint)
}

// FetchLibrary installs the pinned prebuilt libllama into kvtrim's cache and
// returns the path of libllama there.
func FetchLibrary(ctx context.Context, env bindings.Env, log zerolog.Logger) (string, error) {
	m, err := native.ManifestFor(bindings.SupportedVersion)
	if err != nil {
		return "", err
	}
	dir := bindings.CacheDir(env)
	return native.Fetch(ctx, m, dir, func(msg string) { log.Info().Str("into", dir).Msg(msg) })
}

// ModelOptions are the model load settings.
type ModelOptions = bindings.ModelOptions

// Model is a loaded model and the library it came from.
type Model struct {
	*bindings.Model
	lib *bindings.Library
	log zerolog.Logger
}

// LoadModel loads a GGUF model with lib.
func LoadModel(lib *bindings.Library, path string, opt ModelOptions, log zerolog.Logger) (*Model, error) {
	m, err := lib.LoadModel(path, opt)
	if err != nil {
		return nil, err
	}
	log.Debug().Str("model", filepath.Base(path)).Str("arch", m.Arch()).Int("n_layer", m.NLayer()).
		Int("n_head", m.NHead()).Int("n_head_kv", m.NHeadKV()).Int("n_ctx_train", m.NCtxTrain()).Msg("loaded model")
	return &Model{Model: m, lib: lib, log: log}, nil
}

// Library returns the library the model was loaded with.
func (m *Model) Library() *bindings.Library { return m.lib }

// ReadPrompt returns text, or the contents of file if file is set.
func ReadPrompt(text, file string) (string, error) {
	if file == "" {
		return text, nil
	}
	if text != "" {
		return "", errors.New("give the prompt with -p or -f, not both")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read prompt file: %w", err)
	}
	return string(b), nil
}
