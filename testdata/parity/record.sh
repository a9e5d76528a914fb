#!/usr/bin/env bash
# Records llama-completion's greedy output for each case in cases.tsv, the
# reference that parity_test.go compares kvtrim run against.
#
# usage: testdata/parity/record.sh LLAMA_BIN_DIR [MODELS_DIR [RELEASE]]
#   LLAMA_BIN_DIR: where native/build-llama.sh put llama-completion
#   MODELS_DIR:    folder with the models not bundled in testdata/ (default ../shared/models)
#   RELEASE:       record into RELEASE/ (a release other than the default;
#                  the default's recordings are in this folder itself)
#
# The recordings in this folder were made with:
#   native/build-llama.sh /tmp/llama-bin && testdata/parity/record.sh /tmp/llama-bin
# and those of another release R (node-llama-cpp version V, see its
# native/manifest-R.txt) with:
#   native/build-llama.sh --node-llama-cpp V --tools llama-completion /tmp/bin-R &&
#     testdata/parity/record.sh /tmp/bin-R ../shared/models R
# llama-completion of this version sometimes loses the tail of its stdout at
# exit, so a run counts only when its stderr ends with common_perf_print's
# summary, and is retried otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin="${1:?usage: record.sh LLAMA_BIN_DIR [MODELS_DIR]}"
models="${2:-$here/../../../shared/models}"
out="$here${3:+/$3}"
mkdir -p "$out"
while IFS=$'\t' read -r name model ctx n flags prompt; do
  [ "$flags" = "-" ] && flags=""
  case "$name" in ''|'#'*) continue ;; esac
  m="$here/../$model"; [ -f "$m" ] || m="$models/$model"
  for try in 1 2 3 4 5 6 7 8; do
    # shellcheck disable=SC2086
    if "$bin/llama-completion" -m "$m" -p "$prompt" -n "$n" -c "$ctx" --temp 0 -t 1 -no-cnv \
         --no-display-prompt --simple-io $flags >"$out/$name.out" 2>"$here/.stderr" \
       && grep -q "common_perf_print:    graphs reused" "$here/.stderr"; then
      break
    fi
    [ "$try" = 8 ] && { echo "record: $name never completed" >&2; exit 1; }
  done
  echo "$name: $(wc -c <"$out/$name.out") bytes"
done <"$here/cases.tsv"
rm -f "$here/.stderr"
