#!/usr/bin/env bash
# Measures what the prompt cache (--cache-ram) costs in resident memory
# (docs/SERVE.md, "The prompt cache"): starts a server on one slot, sends
# it prompts of about 1000 random words of the demo story one after
# another (each unlike the others, so that each evicts the slot's last
# one into the cache), and prints the server's resident set after each.
#
# usage: docs/cache-ram-memory.sh PORT N SERVER_CMD...
#
# The server command gets "--port PORT" added. For the figures of
# docs/SERVE.md, with the 125m shape (kvtrim random-model --shape 125m):
#
#   docs/cache-ram-memory.sh 28111 25 kvtrim serve --lib LLAMA_BIN -m M -c 16384 -np 1 -t 2 --cache-ram 256
#   docs/cache-ram-memory.sh 28112 25 LLAMA_BIN/llama-server -m M -c 16384 -np 1 -t 2 --cache-ram 256
set -euo pipefail
port=${1:?usage: docs/cache-ram-memory.sh PORT N SERVER_CMD...}
n=${2:?usage: docs/cache-ram-memory.sh PORT N SERVER_CMD...}
shift 2
story=$(dirname "$0")/../cmd/kvtrim/demo_story.txt
"$@" --port "$port" >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 120); do
	curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
	sleep 1
done
for i in $(seq 0 $((n - 1))); do
	prompt=$(tr -s ' \n' '\n\n' <"$story" | tr -d '"\\' | awk -v seed="$i" 'NF { w[n++] = $0 } END { srand(seed); printf "request %d", seed; for (k = 0; k < 1000; k++) printf " %s", w[int(rand() * n)] }')
	tokens=$(curl -sf "http://127.0.0.1:$port/completion" -H 'Content-Type: application/json' \
		-d "{\"prompt\":\"$prompt\",\"n_predict\":4}" | grep -o '"prompt_n":[0-9]*' | cut -d: -f2)
	echo "$i prompt_tokens $tokens rss_kB $(awk '/^VmRSS/ { print $2 }' /proc/$pid/status)"
done
