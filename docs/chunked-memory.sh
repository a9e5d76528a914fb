#!/bin/bash
# Peak memory of a long prompt: the full cache against SnapKV prefilled in
# chunks (-c 2048 --budget 1024 --chunk 512), one run each per prompt
# length, peak RSS from /usr/bin/time -v. Writes a tab-separated table
# (docs/tools/memplot draws it).
#
#   docs/chunked-memory.sh KVTRIM LIBDIR MODEL OUT.tsv [LENGTHS...]
#
# MODEL needs a context of the longest length (kvtrim random-model --shape
# 125m --type q8_0 --ctx 32768 -o r125m-32k-q8.gguf). The prompts are the
# demo story repeated, cut to about the length in tokens.
set -euo pipefail
kvtrim=$1 lib=$2 model=$3 out=$4
shift 4
lengths=${*:-4000 8000 16000 32000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
story=$(dirname "$0")/../cmd/kvtrim/demo_story.txt
for _ in $(seq 1 120); do cat "$story"; done > "$dir/story.txt"
echo -e "len\tconfig\tprompt_tokens\tmaxrss_kb\tprefill_ms\tkv_bytes_peak\tn_ctx_peak\tchunks\twall" > "$out"
for len in $lengths; do
  head -c $((len * 9000 / 3955 - 40)) "$dir/story.txt" > "$dir/p.txt" # about 2.28 bytes a token on this tokenizer
  for cfg in full chunked; do
    if [ "$cfg" = full ]; then args="-c $((len + 256))"; else args="-c 2048 --policy snapkv --budget 1024 --chunk 512"; fi
    # shellcheck disable=SC2086
    /usr/bin/time -v "$kvtrim" run --lib "$lib" -m "$model" -f "$dir/p.txt" -n 4 --temp 0 -t 2 $args \
      --stats-json "$dir/stats.json" > /dev/null 2> "$dir/err.txt"
    rss=$(awk '/Maximum resident/ {print $NF}' "$dir/err.txt")
    wall=$(awk '/Elapsed \(wall/ {print $NF}' "$dir/err.txt")
    python3 - "$dir/stats.json" "$len" "$cfg" "$rss" "$wall" >> "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("\t".join(str(x) for x in [sys.argv[2], sys.argv[3], d["prompt_tokens"], sys.argv[4], round(d["prefill_ms"]),
                                 d["kv_bytes_peak"], d["n_ctx_peak"], d.get("chunks", 0), sys.argv[5]]))
PY
  done
done
