#!/usr/bin/env bash
# The GPU check, for whoever has a GPU: builds (or takes) a CUDA libllama
# with llama-bench, runs kvtrim's tests on it (their models load with every
# layer offloaded, so the KV cache is in device memory and the observer
# reads it with ggml_backend_tensor_get), then measures decoding after
# SnapKV at --ratio 0.1 on a random model of the 1B class at 4K, 16K and
# 32K-token prompts against llama-bench decoding at a depth of the kept
# cells (what llama.cpp itself does with that many cells), flash attention
# on and off, and writes one markdown table.
#
# usage: native/gpu-check.sh [--cpu-only] [--lib DIR] [--shape S] [--lengths L,...]
#                            [--reps N] [--no-tests] [--out FILE]
#
#   --lib DIR      a folder with libllama and llama-bench of one build
#                  (default: built here with 'kvtrim lib build --cuda
#                  --tools llama-bench', or without --cuda for --cpu-only)
#   --cpu-only     no GPU: the CPU build, the 125m shape at 1024 and 2048
#                  tokens unless --shape and --lengths say otherwise (CI runs
#                  it so that this script keeps working)
#   --out FILE     the table (default: stdout only); docs/RESULTS.md keeps
#                  the last GPU table, with the card named
# Needs: go, python3; to build, what 'kvtrim lib build' needs (and nvcc).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cpu_only=0
lib=""
shape=""
lengths=""
reps=3
tests=1
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-only) cpu_only=1 ;;
    --lib) lib="$2"; shift ;;
    --shape) shape="$2"; shift ;;
    --lengths) lengths="$2"; shift ;;
    --reps) reps="$2"; shift ;;
    --no-tests) tests=0 ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$cpu_only" = 1 ]; then
  shape=${shape:-125m}; lengths=${lengths:-1024,2048}; ngl=0
else
  shape=${shape:-1b-gqa}; lengths=${lengths:-4096,16384,32768}; ngl=99
fi
for tool in go python3; do
  command -v "$tool" >/dev/null || { echo "gpu-check: $tool not found" >&2; exit 3; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
kvtrim="$work/kvtrim"
(cd "$root" && go build -o "$kvtrim" ./cmd/kvtrim)

if [ -z "$lib" ]; then
  lib="$work/lib"
  flags=(--tools llama-bench --dir "$lib")
  [ "$cpu_only" = 1 ] || flags+=(--cuda)
  echo "gpu-check: building libllama and llama-bench (kvtrim lib build ${flags[*]})" >&2
  "$kvtrim" lib build "${flags[@]}" >/dev/null
fi
[ -x "$lib/llama-bench" ] || { echo "gpu-check: no llama-bench in $lib (kvtrim lib build --tools llama-bench builds it)" >&2; exit 3; }
backends=$("$kvtrim" lib --lib "$lib" | sed -n 's/^backends: *//p')
device=$("$kvtrim" lib --lib "$lib" | sed -n 's/^device: *//p' | paste -sd';' -)
if [ "$cpu_only" = 0 ] && ! echo "$backends" | grep -q CUDA; then
  echo "gpu-check: $lib has no CUDA backend ($backends); give a CUDA build, or --cpu-only" >&2
  exit 3
fi
echo "gpu-check: $lib: backends $backends; devices $device" >&2

if [ "$tests" = 1 ]; then
  echo "gpu-check: kvtrim's tests on $lib" >&2
  (cd "$root" && KVTRIM_LIB="$lib" go test -count=1 ./... >&2)
fi

max=$(echo "$lengths" | tr ',' '\n' | sort -n | tail -1)
model="$work/random-$shape.gguf"
"$kvtrim" random-model --shape "$shape" --ctx $((max + 512)) -o "$model" >/dev/null
rows="$work/rows.tsv"
for fa in on off; do
  for n in $(echo "$lengths" | tr ',' ' '); do
    echo "gpu-check: kvtrim bench, $shape, $n tokens, flash attention $fa" >&2
    "$kvtrim" bench --lib "$lib" -m "$model" --policy none,snapkv --prompt-tokens "$n" --ratio 0.1 \
      -c $((n + 256)) -ngl "$ngl" --flash-attn "$fa" --reps "$reps" -n 64 --json "$work/b.json" >/dev/null 2>"$work/b.log" ||
      { tail -5 "$work/b.log" >&2; exit 1; }
    kept=$(python3 -c 'import json,sys; r=[r for r in json.load(open(sys.argv[1]))["rows"] if r["policy"]=="snapkv"][0]; print(r["kept_cells"])' "$work/b.json")
    fa01=$([ "$fa" = on ] && echo 1 || echo 0)
    "$lib/llama-bench" -m "$model" -ngl "$ngl" -fa "$fa01" -p 0 -n 64 -d "$kept" -r "$reps" -o json >"$work/lb.json" 2>"$work/lb.log" ||
      { tail -5 "$work/lb.log" >&2; exit 1; }
    python3 - "$work/b.json" "$work/lb.json" "$fa" >>"$rows" <<'EOF'
import json, sys
b = json.load(open(sys.argv[1]))
r = [r for r in b["rows"] if r["policy"] == "snapkv"][0]
lb = json.load(open(sys.argv[2]))[0]
print("\t".join(str(x) for x in [
    r["prompt_tokens"], sys.argv[3], r["kept_cells"],
    "%.0f" % (r["prompt_tokens"] / (r["prefill_ms_full"] / 1000)),
    "%.0f" % (r["prompt_tokens"] / (r["prefill_ms"] / 1000)),
    "%.1f" % r["decode_tok_s_full"], "%.1f" % r["decode_tok_s"], "%.1f" % lb["avg_ts"],
    "%.2f" % (r["decode_tok_s"] / lb["avg_ts"])]))
EOF
  done
done

{
  echo "kvtrim $(cd "$root" && git describe --always --dirty 2>/dev/null || echo '?'); $device; backends $backends; random $shape; -ngl $ngl; SnapKV at 10%; 64 tokens decoded; median of $reps"
  echo
  echo "| prompt | flash attn | kept cells | prefill t/s, full | prefill t/s, SnapKV | decode t/s, full | decode t/s, SnapKV | llama-bench t/s at depth = kept | SnapKV / llama-bench |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
  sed 's/\t/ | /g; s/^/| /; s/$/ |/' "$rows"
} >"$work/table.md"
cat "$work/table.md"
if [ -n "$out" ]; then cp "$work/table.md" "$out"; fi
