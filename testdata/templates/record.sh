#!/bin/sh
# Records the prompts llama-server renders with --jinja for each chat
# template of the pinned llama.cpp source (models/templates/*.jinja) and
# the conversation in conversation.json beside this script, into
# rendered.json: {"TEMPLATE": "PROMPT" or null when llama-server refused
# the template}. TestJinjaMatchesLlamaServer renders the same with kvtrim.
# BIN is the folder native/build-llama.sh builds, SRC the llama.cpp source
# (native/llama-source.sh prints it).
#
#   testdata/templates/record.sh BIN SRC
set -eu
bin=${1:?usage: record.sh BIN SRC}
src=${2:?usage: record.sh BIN SRC}
here=$(cd "$(dirname "$0")" && pwd)
model=$(cd "$here/.." && pwd)/stories260K.gguf
port=18941
out="$here/rendered.json"
printf '{' >"$out"
sep=''
for f in "$src"/models/templates/*.jinja; do
	name=$(basename "$f" .jinja)
	LD_LIBRARY_PATH="$bin" "$bin/llama-server" -m "$model" -c 256 -np 1 -t 1 --port "$port" --jinja \
		--chat-template-file "$f" >"$here/.server.log" 2>&1 &
	pid=$!
	prompt=null
	for _ in $(seq 50); do
		if curl -sf "localhost:$port/health" >/dev/null 2>&1; then
			prompt=$(curl -sf "localhost:$port/apply-template" -H 'Content-Type: application/json' \
				-d @"$here/conversation.json" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["prompt"]))' || echo null)
			break
		fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	printf '%s\n "%s": %s' "$sep" "$name" "$prompt" >>"$out"
	sep=','
	echo "recorded $name" >&2
done
printf '\n}\n' >>"$out"
rm -f "$here/.server.log"
