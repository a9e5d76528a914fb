#!/bin/sh
# Regenerates docs/RESULTS.md and the pictures in docs/results/ from
# kvtrim's own output on this machine. Run it from anywhere in a checkout
# with ../shared/models beside the repository:
#
#   docs/results.sh           # the full grids (about 15-30 minutes on 2 cores)
#   docs/results.sh --quick   # 3 prompts per cell, 1 benchmark repetition
#
# Nothing in RESULTS.md is typed by hand: every table is a command's --md
# output, pasted in below the command that wrote it.
set -eu
cd "$(dirname "$0")/.."
trials=20 reps=5
if [ "${1:-}" = "--quick" ]; then trials=3 reps=1; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/kvtrim" ./cmd/kvtrim
k="$tmp/kvtrim"
out=docs/results
rm -rf "$out" && mkdir -p "$out"
retrieval=../shared/models/kvtrim-retrieval-1m.gguf
recall=../shared/models/kvtrim-recall-0.5m.gguf # its public prompts: recall/public.jsonl beside it

# Each step: a name, then the command; its markdown lands in $out/NAME.md
# and, with the command, in the section $section (the body by default).
section=body
step() {
	name=$1
	shift
	echo "== $name: kvtrim $*" >&2
	"$k" "$@" --md "$out/$name.md" --json "$out/$name.json" >/dev/null
	printf '\n## %s\n\n```sh\nkvtrim %s\n```\n\n' "$name" "$(echo "$*" | sed "s#$tmp/##g")" >>"$tmp/$section.md"
	cat "$out/$name.md" >>"$tmp/$section.md"
	if [ -d "$out/$name" ]; then
		echo >>"$tmp/$section.md"
		for png in "$out/$name"/*.png; do
			printf '![%s](results/%s/%s)\n' "$(basename "$png" .png)" "$name" "$(basename "$png")" >>"$tmp/$section.md"
		done
	fi
}

"$k" random-model --shape 125m --type q8_0 -o "$tmp/random-125m.gguf" >&2

# The benchmarks first, while the machine is otherwise idle.
step bench-125m bench -m "$tmp/random-125m.gguf" --prompt-tokens 1000,2000,4000 -c 4200 --ratio 0.1 --policy snapkv,recent \
	-n 64 --reps "$reps" --png "$out/bench-125m" -t 2
step bench-policies bench -m "$tmp/random-125m.gguf" --prompt-tokens 2000 -c 2200 --ratio 0.1 --policy snapkv,recent,random,knorm,keydiff,expected-attention,h2o,tova,streaming,snapkv+h2o,snapkv+tova \
	-n 64 --reps "$reps" -t 2
step bench-stories260K bench -m testdata/stories260K.gguf --prompt-tokens 500,1000,1900 -c 2048 --ratio 0.1 --policy snapkv \
	-n 64 --reps "$reps" --png "$out/bench-stories260K" -t 2
step passkey eval passkey -m "$retrieval" --lengths 256,512,1000 --depths 0.1,0.5,0.9 --trials "$trials" --window 8 \
	--ratio 0.05,0.1,0.2,0.5 --policy none,recent,random,snapkv,knorm,keydiff,expected-attention,h2o,tova,streaming,snapkv+h2o,snapkv+tova --png "$out/passkey" -t 2
step recall eval recall -m "$recall" --ratio 0.05,0.1,0.2,0.5 \
	--policy none,recent,random,snapkv,knorm,keydiff,expected-attention,h2o,tova,streaming,snapkv+h2o,snapkv+tova --png "$out/recall" -t 2
step lines eval lines -m "$retrieval" --lengths 512,1000 --depths 0.1,0.5,0.9 --trials "$trials" --window 8 \
	--ratio 0.1,0.2 --policy none,recent,snapkv,h2o --png "$out/lines" -t 2
step ppl eval ppl -m testdata/stories260K.gguf -f testdata/moby-dick-ch1-35.txt --tokens 20000 --segment 4000 \
	--configs streaming:4+508,window:512,ctxshift:4+508,dense:512/64 --png "$out/ppl" -t 2

# The leaderboard of every policy, from the reports above, goes first.
section=top
step leaderboard eval leaderboard "$out/passkey.json" "$out/recall.json" --bench "$out/bench-policies.json"

{
	echo "# Results"
	echo
	echo "Written by \`docs/results.sh$([ "$trials" = 3 ] && echo ' --quick')\` from kvtrim's own output; do not edit by hand."
	echo "The machine and library are in the first line under each command. The 125m model is random-weight"
	echo "(\`kvtrim random-model --shape 125m --type q8_0\`): its speed is real, its outputs mean nothing."
	echo "Budgets are shares of each prompt; \`none\` is the full cache. docs/SNAPKV.md and docs/H2O-STREAMING.md"
	echo "explain the policies and their settings."
	cat "$tmp/top.md" "$tmp/body.md"
} >docs/RESULTS.md
echo "wrote docs/RESULTS.md" >&2
