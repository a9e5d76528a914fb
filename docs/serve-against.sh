#!/usr/bin/env bash
# Regenerates the throughput tables of docs/SERVE.md ("Against
# llama-server"): kvtrim serve and llama-server on the same model, flags
# and libllama, under the same drawn loads, alternating, 3 runs of each.
#
# usage: docs/serve-against.sh LLAMA_BIN [OUT_DIR]
#
# LLAMA_BIN is the folder native/build-llama.sh builds (llama-server and
# its libllama, which kvtrim serve then loads too). The random-weight 125m
# model is written to OUT_DIR. Takes about 70 minutes on 2 cores; run it
# on a quiet machine. Runs are alternated, 3 of each server (5 for the
# short prompts, whose runs last seconds), and the medians shown. The
# long-prompt loads send 6-10 requests per client, which gives the run's
# middle, where every client is queued or served, most of its weight
# against its first and last requests. SERVER_ARGS in the environment
# goes to both servers ("-nr", say).
set -euo pipefail
bin=${1:?usage: docs/serve-against.sh LLAMA_BIN [OUT_DIR]}
out=${2:-/tmp/kvtrim-serve-against}
cd "$(dirname "$0")/.."
mkdir -p "$out"
go build -o "$out/kvtrim" ./cmd/kvtrim
k="$out/kvtrim"
[ -f "$out/r125m.gguf" ] || "$k" random-model --shape 125m --type q8_0 -o "$out/r125m.gguf" >/dev/null
s260=testdata/stories260K.gguf
run() { # NAME, then bench serve's flags
  name=$1; shift
  "$k" bench serve --against "$bin" -t 2 --server-args "${SERVER_ARGS:-}" --json "$out/$name.json" --md "$out/$name.md" "$@" 2>"$out/$name.log" >/dev/null
  cat "$out/$name.md"
}
# stories260K's slots are capped at its 2048-token training context by
# llama-server, so its prompts stay under that.
run s260-short -m "$s260" -c 4096 --clients 8,32 --requests 20 --reps 5 --prompt-range 20,100
run s260-mixed-8 -m "$s260" -c 8192 --clients 8 --requests 10 --prompt-range 20,1900
run s260-mixed-32 -m "$s260" -c 8192 --clients 32 --requests 8 --prompt-range 20,1900
run r125m-short -m "$out/r125m.gguf" -c 4096 --clients 8,32 --requests 4 --reps 5 --prompt-range 20,100
run r125m-mixed -m "$out/r125m.gguf" -c 16384 --clients 8 --requests 6 --prompt-range 20,3000
