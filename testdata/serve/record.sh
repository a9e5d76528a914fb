#!/bin/sh
# Records llama-server's answers to the requests in cases.tsv, at
# temperature 0, into NAME.json beside this script; TestMatchesLlamaServer
# (internal/server) sends the same requests to kvtrim serve --kv-policy none
# and compares the generated text. BIN is a folder holding llama-server of
# the pinned version and its libraries (native/build-llama.sh BIN builds
# them). Run from anywhere, with ../shared/models beside the repository;
# NAMEs, if given, record only those cases:
#
#   testdata/serve/record.sh BIN [NAME...]
set -eu
bin=${1:?usage: record.sh BIN [NAME...] (BIN: the folder of llama-server)}
shift
only=" $* "
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
port=18931
grep -v '^#' "$here/cases.tsv" | cut -f2 | sort -u | while read -r model; do
	LD_LIBRARY_PATH="$bin" "$bin/llama-server" -m "$root/$model" -c 1024 -np 1 -t 1 --port "$port" --no-webui >"$here/.server.log" 2>&1 &
	pid=$!
	until curl -sf "localhost:$port/health" >/dev/null; do sleep 0.2; done
	grep -v '^#' "$here/cases.tsv" | while IFS="$(printf '\t')" read -r name m endpoint body; do
		[ "$m" = "$model" ] || continue
		[ "$only" = "  " ] || case "$only" in *" $name "*) ;; *) continue ;; esac
		curl -sf "localhost:$port$endpoint" -H 'Content-Type: application/json' -d "$body" >"$here/$name.json"
		echo "recorded $name" >&2
	done
	kill "$pid"
	wait "$pid" 2>/dev/null || true
done
rm -f "$here/.server.log"
