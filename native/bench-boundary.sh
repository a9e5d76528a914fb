#!/usr/bin/env bash
# Measures what the purego boundary costs: decode tokens/s of 'kvtrim run'
# against llama-completion's own eval speed, same library, model, prompt,
# threads and token count, alternating the two, median of REPS runs each.
#
# usage: native/bench-boundary.sh LLAMA_BIN_DIR MODEL [THREADS] [REPS] [N]
#   LLAMA_BIN_DIR: a native/build-llama.sh output (llama-completion and the
#                  libllama it links; kvtrim is pointed at the same library)
#
# llama-completion's figure is llama.cpp's own eval timer (time inside
# llama_decode for one-token batches). kvtrim's decode_tok_s is timed in Go
# around each llama_decode call, so it includes the crossing into C; its
# llama_eval_ms is llama.cpp's timer for the same calls.
set -euo pipefail
bin="${1:?usage: bench-boundary.sh LLAMA_BIN_DIR MODEL [THREADS] [REPS] [N]}"
model="${2:?model}"
threads="${3:-1}"
reps="${4:-7}"
n="${5:-256}"
prompt="Once upon a time"
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$here/.." && go build -o "$work/kvtrim" ./cmd/kvtrim)

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

for i in $(seq "$reps"); do
  for try in 1 2 3 4 5; do
    "$bin/llama-completion" -m "$model" -p "$prompt" -n "$n" -c $((n + 64)) --temp 0 --ignore-eos \
      -t "$threads" -no-cnv --no-display-prompt --simple-io --no-warmup >/dev/null 2>"$work/lc.err" || true
    line=$(grep "common_perf_print:        eval time" "$work/lc.err" || true)
    [ -n "$line" ] && break
  done
  echo "$line" | sed -E 's/.*, *([0-9.]+) tokens per second.*/\1/' >>"$work/lc"
  "$work/kvtrim" run --lib "$bin" -m "$model" -p "$prompt" -n "$n" -c $((n + 64)) --temp 0 --ignore-eos \
    -t "$threads" --stats-json "$work/st.json" >/dev/null
  field() { sed -nE "s/.*\"$1\": ([0-9.e+-]+).*/\1/p" "$work/st.json"; }
  awk -v a="$(field decode_tok_s)" -v n="$(field decode_tokens)" -v ms="$(field llama_eval_ms)" \
    'BEGIN {print a, n / (ms / 1000)}' >>"$work/kv"
done
lc=$(median <"$work/lc")
kv=$(cut -d' ' -f1 "$work/kv" | median)
kvl=$(cut -d' ' -f2 "$work/kv" | median)
echo "model $(basename "$model"), $threads thread(s), $n tokens, median of $reps runs each"
printf '%-44s %10s\n' "" "tokens/s"
printf '%-44s %10.1f\n' "llama-completion (llama.cpp eval timer)" "$lc"
printf '%-44s %10.1f\n' "kvtrim run (Go timer around llama_decode)" "$kv"
printf '%-44s %10.1f\n' "kvtrim run (llama.cpp eval timer)" "$kvl"
awk -v a="$kv" -v b="$lc" 'BEGIN {printf "kvtrim / llama-completion: %.3f (boundary cost %.1f%%)\n", a/b, 100*(1-a/b)}'
